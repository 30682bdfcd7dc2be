//! Kubernetes name rules, and picking injected names that do not collide with the pod's.

/// Checks an RFC 1123 label (container and volume names): lowercase alphanumerics and `-`,
/// starting and ending alphanumeric, at most 63 characters.
pub fn check_dns_label(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!("{name:?} must be 1 to 63 characters"));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !name.chars().all(ok_char) || !name.starts_with(alnum) || !name.ends_with(alnum) {
        return Err(format!("{name:?} must be lowercase letters, digits and '-', starting and ending with a letter or digit"));
    }
    Ok(())
}

/// Checks an RFC 1123 subdomain (ConfigMap names): dot-separated labels, at most 253 characters.
pub fn check_dns_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err(format!("{name:?} must be 1 to 253 characters"));
    }
    for part in name.split('.') {
        check_dns_label(part).map_err(|_| {
            format!("{name:?} must be lowercase letters, digits, '-' and '.', each part starting and ending with a letter or digit")
        })?;
    }
    Ok(())
}

/// `base`, or `base-2`, `base-3`, … : the first that is not taken, cut to fit 63 characters.
pub fn unique_name(base: &str, is_taken: impl Fn(&str) -> bool) -> String {
    if !is_taken(base) {
        return base.to_owned();
    }
    (2u32..)
        .map(|n| {
            let suffix = format!("-{n}");
            let keep = base.len().min(63 - suffix.len());
            let stem = base[..keep].trim_end_matches('-');
            format!("{stem}{suffix}")
        })
        .find(|candidate| !is_taken(candidate))
        .unwrap_or_else(|| base.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(check_dns_label("dind").is_ok());
        assert!(check_dns_label("dind-2").is_ok());
        for bad in ["", "-a", "a-", "Dind", "a_b", "a.b", &"x".repeat(64)] {
            assert!(check_dns_label(bad).is_err(), "{bad}");
        }
        assert!(check_dns_subdomain("dind-injector-daemon-config").is_ok());
        assert!(check_dns_subdomain("a.b-c").is_ok());
        assert!(check_dns_subdomain("a..b").is_err());
    }

    use std::collections::HashSet;

    #[test]
    fn unique_names_skip_taken_ones_and_stay_valid() {
        let taken: HashSet<&str> = ["dind", "dind-2"].into_iter().collect();
        assert_eq!(unique_name("dind", |n| taken.contains(n)), "dind-3");
        assert_eq!(unique_name("other", |n| taken.contains(n)), "other");
        let long = "a".repeat(63);
        let taken: HashSet<&str> = [long.as_str()].into_iter().collect();
        let n = unique_name(&long, |n| taken.contains(n));
        assert!(n.len() <= 63 && check_dns_label(&n).is_ok(), "{n}");
    }
}
