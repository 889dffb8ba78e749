//! Validated identifiers that end up in file names: profile UUIDs and kernel
//! interface names. Anything that reaches the file system goes through these,
//! so `/`, `..`, spaces or control bytes can never escape NM's directories.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{0:?} is not a UUID (expected 8-4-4-4-12 hex digits)")]
    Uuid(String),
    #[error("{0:?} is not a valid interface name")]
    Iface(String),
}

/// A profile UUID in canonical 8-4-4-4-12 hexadecimal form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uuid(String);

impl Uuid {
    pub fn parse(s: &str) -> Result<Uuid, NameError> {
        let groups: Vec<&str> = s.split('-').collect();
        let lengths_ok = groups.len() == 5 && groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12]);
        if lengths_ok && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_hexdigit())) {
            Ok(Uuid(s.to_ascii_lowercase()))
        } else {
            Err(NameError::Uuid(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Linux network interface name: 1 to 15 bytes (IFNAMSIZ - 1), no `/`,
/// `:`, white space or control characters, and not `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Iface(String);

impl Iface {
    pub const MAX_LEN: usize = 15;

    pub fn parse(s: &str) -> Result<Iface, NameError> {
        let bad_byte = |b: u8| b == b'/' || b == b':' || b.is_ascii_whitespace() || b.is_ascii_control() || b >= 0x80;
        if s.is_empty() || s.len() > Self::MAX_LEN || s == "." || s == ".." || s.bytes().any(bad_byte) {
            Err(NameError::Iface(s.to_owned()))
        } else {
            Ok(Iface(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Iface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_accepts_canonical_and_normalises_case() {
        let u = Uuid::parse("5F0C7A3E-1b2c-4d5e-8f90-0123456789ab").unwrap();
        assert_eq!(u.as_str(), "5f0c7a3e-1b2c-4d5e-8f90-0123456789ab");
    }

    #[test]
    fn uuid_rejects_paths_and_malformed() {
        for bad in [
            "",
            "../../etc/passwd",
            "5f0c7a3e-1b2c-4d5e-8f90-0123456789a",
            "5f0c7a3e/1b2c-4d5e-8f90-0123456789ab",
            "5f0c7a3e-1b2c-4d5e-8f90-0123456789ab ",
            "zf0c7a3e-1b2c-4d5e-8f90-0123456789ab",
            "5f0c7a3e-1b2c-4d5e-8f900123456789ab",
        ] {
            assert!(Uuid::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn iface_rules() {
        for good in ["eth0", "wlp2s0", "wired0", "a", "enx00e04c680001", "br-lan.10", "x_y-z"] {
            assert!(Iface::parse(good).is_ok(), "{good:?} rejected");
        }
        for bad in ["", ".", "..", "a/b", "../x", "eth 0", "eth0:1", "sixteen-chars-xx", "tab\t", "nl\n", "é"] {
            assert!(Iface::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
