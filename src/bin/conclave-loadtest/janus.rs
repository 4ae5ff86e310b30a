//! Janus as a load target (filled in below).
use crate::Join;
use crate::peer::Peer;

pub struct Server {
    pub pid: u32,
}

impl Server {
    pub async fn start(_dir: &std::path::Path, _cpu: Option<usize>) -> anyhow::Result<Server> {
        anyhow::bail!("not yet")
    }
    pub async fn join(&self, _j: Join) -> anyhow::Result<(Peer, Option<u64>)> {
        anyhow::bail!("not yet")
    }
    pub async fn stop(self) {}
}
