//! The apiserver's version, for `sidecar-mode: auto`.

use kube::Client;

use crate::inject::KubeVersion;

use super::{ClusterError, at};

/// Asks the apiserver for its version (`GET /version`).
pub async fn server_version(client: &Client) -> Result<KubeVersion, ClusterError> {
    let info = client.apiserver_version().await.map_err(at("GET /version"))?;
    Ok(parse_version(&info.major, &info.minor))
}

/// Reads `major`/`minor` as the apiserver reports them (`"1"`, `"30+"` on some providers).
pub fn parse_version(major: &str, minor: &str) -> KubeVersion {
    let digits = |s: &str| s.chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap_or(0);
    KubeVersion { major: digits(major), minor: digits(minor) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_suffixes_are_ignored() {
        assert_eq!(parse_version("1", "30+"), KubeVersion { major: 1, minor: 30 });
        assert_eq!(parse_version("1", "28"), KubeVersion { major: 1, minor: 28 });
        assert_eq!(parse_version("", "x"), KubeVersion { major: 0, minor: 0 });
    }
}
