//! Container image references: enough parsing to match an allowlist, to tell a dind image, and to
//! know which dockerd flags an image's version understands.

/// A parsed image reference `[registry/]repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef<'a> {
    /// The repository path without registry (`library/docker` is written `docker`).
    pub repository: &'a str,
    /// The tag, if any.
    pub tag: Option<&'a str>,
    /// The digest, if any.
    pub digest: Option<&'a str>,
}

impl<'a> ImageRef<'a> {
    /// Parses an image reference; the error says what is wrong with it.
    pub fn parse(image: &'a str) -> Result<Self, String> {
        if image.is_empty() || image.len() > 512 || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{image:?} is not an image reference (like docker:28.5.1-dind)"));
        }
        let (rest, digest) = match image.split_once('@') {
            Some((r, d)) if d.contains(':') => (r, Some(d)),
            Some(_) => return Err(format!("{image:?} has a malformed digest (expected @sha256:…)")),
            None => (image, None),
        };
        // A ':' after the last '/' separates the tag; one before it belongs to a registry port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (path, tag) = match rest[last_slash..].find(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if path.is_empty() || tag == Some("") || path.ends_with('/') {
            return Err(format!("{image:?} is not an image reference (like docker:28.5.1-dind)"));
        }
        let mut parts = path.splitn(2, '/');
        let first = parts.next().unwrap_or_default();
        let repository = match parts.next() {
            Some(after) if first.contains('.') || first.contains(':') || first == "localhost" => after,
            _ => path,
        };
        let repository = repository.strip_prefix("library/").unwrap_or(repository);
        Ok(ImageRef { repository, tag, digest })
    }

    /// The last path component (`docker` for `mirror.gcr.io/library/docker:28-dind`).
    pub fn name(&self) -> &'a str {
        self.repository.rsplit('/').next().unwrap_or(self.repository)
    }

    /// Whether this is a Docker-in-Docker image: the official `docker` image with a `dind`
    /// tag, or any image whose name says `dind`.
    pub fn is_dind(&self) -> bool {
        self.repository.contains("dind") || (self.name() == "docker" && self.tag.is_some_and(|t| t.contains("dind")))
    }

    /// The Docker major version in the tag of the official image (`28` for `docker:28.5.1-dind`),
    /// when there is one. `None` for `docker:dind` (latest) and other images.
    pub fn docker_major(&self) -> Option<u32> {
        if self.name() != "docker" {
            return None;
        }
        let tag = self.tag?;
        let digits: String = tag.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    }
}

/// An allowlist entry; `*` matches any run of characters.
#[derive(Debug, Clone, Copy)]
pub struct ImagePattern<'a>(&'a str);

impl<'a> ImagePattern<'a> {
    /// Wraps a pattern.
    pub fn new(pattern: &'a str) -> Self {
        ImagePattern(pattern.trim())
    }

    /// Whether `image` matches the whole pattern.
    pub fn matches(&self, image: &str) -> bool {
        glob_match(self.0.as_bytes(), image.as_bytes())
    }
}

fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative matcher with one backtrack point: linear in practice, no recursion.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ImageRef<'_> {
        match ImageRef::parse(s) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn parses_registries_tags_and_digests() {
        let r = parse("docker:28.5.1-dind");
        assert_eq!((r.repository, r.tag, r.docker_major()), ("docker", Some("28.5.1-dind"), Some(28)));
        let r = parse("mirror.gcr.io/library/docker:27-dind@sha256:abc");
        assert_eq!((r.name(), r.tag, r.digest), ("docker", Some("27-dind"), Some("sha256:abc")));
        let r = parse("localhost:5000/ci/docker");
        assert_eq!((r.repository, r.tag), ("ci/docker", None));
        assert!(ImageRef::parse("").is_err());
        assert!(ImageRef::parse("docker:").is_err());
        assert!(ImageRef::parse("a b").is_err());
    }

    #[test]
    fn tells_dind_images() {
        assert!(parse("docker:dind").is_dind());
        assert!(parse("docker:27-dind-rootless").is_dind());
        assert!(parse("cruizba/ubuntu-dind:latest").is_dind());
        assert!(!parse("docker:27-cli").is_dind());
        assert!(!parse("golang:1.23").is_dind());
        assert_eq!(parse("docker:dind").docker_major(), None);
        assert_eq!(parse("docker:20.10.24-dind").docker_major(), Some(20));
    }

    #[test]
    fn glob_patterns() {
        let p = ImagePattern::new("docker:*-dind");
        assert!(p.matches("docker:28.5.1-dind"));
        assert!(!p.matches("docker:28.5.1-dind-rootless"));
        assert!(!p.matches("evil/docker:28-dind"));
        assert!(ImagePattern::new("registry.internal/*").matches("registry.internal/docker:28-dind"));
        assert!(ImagePattern::new("*").matches("anything"));
        assert!(!ImagePattern::new("a*b*c").matches("aXbY"));
    }
}
