//! The cluster as the engine reaches it: one host per node (commands and files) and one observer
//! of the nodes' distribution. Real runs build it from the nodes' transports and probe VMs;
//! engine tests give it an in-memory cluster. The engine never asks which one it has.

use crate::error::Result;
use crate::host::Host;
use crate::observe::{Observer, probe_pool};
use crate::target::NodeTarget;
use std::sync::Arc;

#[derive(Clone)]
pub struct Cluster {
    /// In the order of the plan's nodes.
    pub hosts: Vec<Arc<dyn Host>>,
    pub observer: Arc<dyn Observer>,
}

impl Cluster {
    /// Each node's own transport, and probe VMs (booted on first use) that speak to them.
    pub fn of_targets(targets: &[NodeTarget]) -> Result<Self> {
        Ok(Cluster {
            hosts: targets
                .iter()
                .map(|t| Arc::new(t.transport.clone()) as Arc<dyn Host>)
                .collect(),
            observer: Arc::new(probe_pool(targets)?),
        })
    }

    pub fn host(&self, index: usize) -> &Arc<dyn Host> {
        &self.hosts[index]
    }
}
