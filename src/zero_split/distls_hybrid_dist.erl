%% Placeholder: replaced by the real module (branch hybrid).
-module(distls_hybrid_dist).
