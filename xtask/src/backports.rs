//! Debian's backports suite for this release, for packages whose stable version is too old.
//!
//! The suite is added next to the release's own entry, with the same mirror (read from the
//! system's apt sources, so no mirror is named here) and a default pin, so apt takes nothing from it
//! unless asked with `-t <release>-backports`.

use std::path::Path;

use anyhow::{bail, Context, Result};

const SOURCES_DIR: &str = "/etc/apt/sources.list.d";
const OUR_FILE: &str = "virmo-backports.sources";

/// One deb822 stanza's fields we need.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    uris: String,
    suites: Vec<String>,
    signed_by: Option<String>,
}

/// The stanzas of a deb822 `.sources` file.
fn parse_deb822(text: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .filter(|l| !l.starts_with('#'))
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        };
        if let (Some(uris), Some(suites)) = (field("URIs"), field("Suites")) {
            entries.push(Entry {
                uris,
                suites: suites.split_whitespace().map(str::to_string).collect(),
                signed_by: field("Signed-By"),
            });
        }
    }
    entries
}

/// The one-line `sources.list` entries (`deb URI SUITE COMPONENTS`).
fn parse_one_line(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            if words.next()? != "deb" {
                return None;
            }
            let mut uri = words.next()?;
            if uri.starts_with('[') {
                if !uri.ends_with(']') {
                    words.find(|w| w.ends_with(']'))?;
                }
                uri = words.next()?;
            }
            Some(Entry {
                uris: uri.to_string(),
                suites: vec![words.next()?.to_string()],
                signed_by: None,
            })
        })
        .collect()
}

/// The stanza that adds `<release>-backports` with the mirror of the release's own entry.
fn backports_stanza(entries: &[Entry], release: &str) -> Option<String> {
    let main = entries
        .iter()
        .find(|e| e.suites.iter().any(|s| s == release))?;
    let mut text = format!(
        "Types: deb\nURIs: {}\nSuites: {release}-backports\nComponents: main\n",
        main.uris
    );
    if let Some(key) = &main.signed_by {
        text.push_str(&format!("Signed-By: {key}\n"));
    }
    Some(text)
}

/// This system's release codename (`VERSION_CODENAME` in /etc/os-release).
fn release() -> Result<String> {
    let text = std::fs::read_to_string("/etc/os-release").context("reading /etc/os-release")?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
        .context("/etc/os-release names no VERSION_CODENAME")
}

/// Makes `<release>-backports` known to apt (once) and returns its suite name.
pub fn ensure() -> Result<String> {
    let release = release()?;
    let suite = format!("{release}-backports");
    let mut entries = Vec::new();
    let mut already = false;
    let mut files: Vec<_> = std::fs::read_dir(SOURCES_DIR)
        .map(|dir| dir.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.push(Path::new("/etc/apt/sources.list").to_path_buf());
    for path in files {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let found = match path.extension().and_then(|e| e.to_str()) {
            Some("sources") => parse_deb822(&text),
            Some("list") => parse_one_line(&text),
            _ => continue,
        };
        already |= found.iter().any(|e| e.suites.contains(&suite));
        entries.extend(found);
    }
    if already {
        return Ok(suite);
    }
    let Some(stanza) = backports_stanza(&entries, &release) else {
        bail!("apt has no source for {release}; cannot add {suite}");
    };
    let path = Path::new(SOURCES_DIR).join(OUR_FILE);
    std::fs::write(&path, stanza).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("xtask: added {suite} to apt's sources ({})", path.display());
    Ok(suite)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEB822: &str = "Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n";

    #[test]
    fn the_backports_stanza_reuses_the_release_mirror_and_key() {
        let entries = parse_deb822(DEB822);
        assert_eq!(entries.len(), 2);
        let stanza = backports_stanza(&entries, "bookworm").expect("stanza");
        assert_eq!(
            stanza,
            "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        );
        assert_eq!(backports_stanza(&entries, "trixie"), None);
    }

    #[test]
    fn one_line_sources_are_read_with_or_without_options() {
        let entries = parse_one_line(
            "# comment\ndeb http://mirror.example/debian bookworm main\ndeb [arch=amd64] http://mirror.example/x bookworm-updates main\ndeb [arch=amd64 trusted=yes] http://mirror.example/y bookworm-security main\ndeb-src http://a b c\n",
        );
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].uris, "http://mirror.example/debian");
        assert_eq!(entries[1].suites, vec!["bookworm-updates".to_string()]);
        assert_eq!(entries[2].uris, "http://mirror.example/y");
    }
}
