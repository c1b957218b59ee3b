//! Published ports: the seed's `pub:222:22`, Docker's `8080:80` and `80`.

use berth_proto::container::Protocol;
use berth_proto::PortBinding;

use super::ParseError;

/// One port to publish: `[pub:][HOST:]CONTAINER[/tcp|/udp]`.
///
/// `pub:` (the seed's spelling) publishes on the instance's public address, which is
/// what every published port does; it is accepted for compatibility.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMapping(PortBinding);

impl PortMapping {
    /// Parses a port spec.
    pub fn parse(spec: &str) -> Result<PortMapping, ParseError> {
        let bad = |why: &str| {
            ParseError::new(format!(
                "Invalid port spec '{spec}': {why}. Use [pub:][HOST_PORT:]CONTAINER_PORT[/tcp|/udp], e.g. pub:8080:80"
            ))
        };
        let s = spec.trim();
        let (s, protocol) = match s.rsplit_once('/') {
            Some((rest, "tcp")) => (rest, Protocol::Tcp),
            Some((rest, "udp")) => (rest, Protocol::Udp),
            Some(_) => return Err(bad("the protocol must be tcp or udp")),
            None => (s, Protocol::Tcp),
        };
        let s = s.strip_prefix("pub:").unwrap_or(s);
        let parts: Vec<&str> = s.split(':').collect();
        let port = |p: &str, what: &str| -> Result<u16, ParseError> {
            match p.parse::<u32>() {
                Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
                _ => Err(bad(&format!(
                    "{what} '{p}' is not a number between 1 and 65535"
                ))),
            }
        };
        let binding = match parts.as_slice() {
            [c] => PortBinding {
                host_port: None,
                container_port: port(c, "container port")?,
                protocol,
            },
            [h, c] => PortBinding {
                host_port: Some(port(h, "host port")?),
                container_port: port(c, "container port")?,
                protocol,
            },
            _ => return Err(bad("too many ':' separators")),
        };
        Ok(PortMapping(binding))
    }

    /// The binding to hand to the agent.
    pub fn binding(&self) -> PortBinding {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_pub_spelling_publishes_host_to_container() {
        let p = PortMapping::parse("pub:222:22").unwrap().binding();
        assert_eq!(p.host_port, Some(222));
        assert_eq!(p.container_port, 22);
        assert_eq!(p.protocol, Protocol::Tcp);
    }

    #[test]
    fn docker_spellings_are_accepted() {
        let p = PortMapping::parse("8080:80/udp").unwrap().binding();
        assert_eq!(
            (p.host_port, p.container_port, p.protocol),
            (Some(8080), 80, Protocol::Udp)
        );
        let p = PortMapping::parse("80").unwrap().binding();
        assert_eq!((p.host_port, p.container_port), (None, 80));
    }

    #[test]
    fn malformed_specs_are_refused_with_the_accepted_form() {
        for bad in [
            "", "pub:", "0:80", "70000:80", "a:b", "1:2:3", "80/sctp", "pub:x:22",
        ] {
            let e = PortMapping::parse(bad).unwrap_err();
            assert!(e.0.contains("Invalid port spec"), "{bad}: {e}");
            assert!(e.0.contains("CONTAINER_PORT"), "{bad}: {e}");
        }
    }
}
