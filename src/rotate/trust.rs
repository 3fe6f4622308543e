//! Whether any two nodes can open a new link at every moment of a rotation: the moves applied
//! one by one to what each node presents and trusts, every pair checked both ways after each.
//! Pure: certificates in, the first moment that breaks out.

use crate::cert_info::{CertSummary, verify_chain};
use rustls_pki_types::CertificateDer;
use std::collections::HashMap;
use std::time::SystemTime;

/// What one node presents (its chain, leaf first) and trusts (its CA file's certificates).
#[derive(Debug, Clone)]
pub struct NodeTrust {
    pub name: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub cas: Vec<CertificateDer<'static>>,
}

/// A move as trust sees it: node `node` now presents `chain` and/or trusts `cas`.
pub struct TrustChange {
    pub label: String,
    pub node: usize,
    pub chain: Option<Vec<CertificateDer<'static>>>,
    pub cas: Option<Vec<CertificateDer<'static>>>,
}

/// The first moment at which some node would refuse another's new link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// `before any change`, or the move after which it breaks.
    pub when: String,
    pub presenting: String,
    pub verifying: String,
    pub why: String,
}

impl Broken {
    pub fn describe(&self) -> String {
        format!(
            "{}: the certificate {} presents would be refused by {} ({})",
            self.when, self.presenting, self.verifying, self.why
        )
    }
}

/// Checks the start and the state after every change. A node verifies its own certificate too:
/// the probes distls talks to it through present the node's own files.
pub fn check_moments(
    mut nodes: Vec<NodeTrust>,
    changes: &[TrustChange],
    now: SystemTime,
) -> Result<(), Broken> {
    let mut verdicts = Verdicts::default();
    check_pairs(&nodes, None, "before any change", now, &mut verdicts)?;
    for change in changes {
        let node = &mut nodes[change.node];
        if let Some(chain) = &change.chain {
            node.chain = chain.clone();
        }
        if let Some(cas) = &change.cas {
            node.cas = cas.clone();
        }
        let when = format!("after {}", change.label);
        check_pairs(&nodes, Some(change.node), &when, now, &mut verdicts)?;
    }
    Ok(())
}

/// Verdicts already reached, by (chain, CA set) content: a cluster shares a few CA sets, so a
/// thousand nodes cost a few thousand verifications, not a billion.
#[derive(Default)]
struct Verdicts(HashMap<(String, String), Result<(), String>>);

impl Verdicts {
    fn verify(
        &mut self,
        chain: &[CertificateDer<'static>],
        cas: &[CertificateDer<'static>],
        now: SystemTime,
    ) -> Result<(), String> {
        let key = (digest(chain), digest(cas));
        self.0
            .entry(key)
            .or_insert_with(|| verify_chain(chain, cas, now))
            .clone()
    }
}

fn digest(certs: &[CertificateDer<'static>]) -> String {
    let mut all = Vec::new();
    for cert in certs {
        all.extend_from_slice(&(cert.len() as u64).to_be_bytes());
        all.extend_from_slice(cert);
    }
    crate::atomic_file::sha256_hex(&all)
}

/// Every pair both ways, or after a change only the pairs that involve the changed node.
fn check_pairs(
    nodes: &[NodeTrust],
    changed: Option<usize>,
    when: &str,
    now: SystemTime,
    verdicts: &mut Verdicts,
) -> Result<(), Broken> {
    let involved = |i: usize, j: usize| changed.is_none_or(|k| i == k || j == k);
    for (i, presenting) in nodes.iter().enumerate() {
        for (j, verifying) in nodes.iter().enumerate() {
            if !involved(i, j) {
                continue;
            }
            if let Err(why) = verdicts.verify(&presenting.chain, &verifying.cas, now) {
                let issuer = presenting
                    .chain
                    .first()
                    .and_then(|leaf| CertSummary::from_der(leaf).ok())
                    .map_or_else(String::new, |s| format!("issued by {}: ", s.issuer));
                return Err(Broken {
                    when: when.to_string(),
                    presenting: presenting.name.clone(),
                    verifying: verifying.name.clone(),
                    why: format!("{issuer}{why}"),
                });
            }
        }
    }
    Ok(())
}
