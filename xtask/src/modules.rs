//! Kernel modules: their dependencies (read from each `.ko`'s `.modinfo`), and a load order.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The modules of one kernel tree, by name (`virtio_mmio`, with `-` folded to `_`).
pub struct ModuleTree {
    by_name: BTreeMap<String, PathBuf>,
}

impl ModuleTree {
    /// Indexes every `.ko` below `lib/modules/<version>/`.
    pub fn scan(modules_dir: &Path) -> Result<Self> {
        let mut by_name = BTreeMap::new();
        let mut stack = vec![modules_dir.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in
                std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
            {
                let path = entry?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Some(stem) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".ko"))
                {
                    by_name.insert(normalise(stem), path);
                }
            }
        }
        Ok(Self { by_name })
    }

    /// `wanted` and everything they depend on, dependencies first.
    pub fn load_order(&self, wanted: &[&str]) -> Result<Vec<(String, PathBuf)>> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        for name in wanted {
            self.visit(&normalise(name), &mut seen, &mut order, 0)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        seen: &mut HashSet<String>,
        order: &mut Vec<(String, PathBuf)>,
        depth: usize,
    ) -> Result<()> {
        if depth > 32 {
            bail!("module dependency chain through {name} is too deep (a cycle?)");
        }
        if !seen.insert(name.to_string()) {
            return Ok(());
        }
        let path = self.by_name.get(name).with_context(|| {
            format!("kernel module {name} is not in the kernel package (built in, or misspelt?)")
        })?;
        for dep in depends_of(path)? {
            self.visit(&dep, seen, order, depth + 1)?;
        }
        order.push((name.to_string(), path.clone()));
        Ok(())
    }
}

fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

/// The `depends=` list of a module's `.modinfo` section.
pub fn depends_of(ko: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(ko).with_context(|| format!("reading {}", ko.display()))?;
    Ok(parse_depends(&bytes))
}

fn parse_depends(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .filter_map(|field| field.strip_prefix(b"depends="))
        .flat_map(|list| {
            String::from_utf8_lossy(list)
                .split(',')
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|d| !d.is_empty())
        .map(|d| normalise(&d))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_field_is_read_from_modinfo_strings() {
        let bytes = b"\0license=GPL\0depends=virtio,virtio_ring\0intree=Y\0";
        assert_eq!(parse_depends(bytes), ["virtio", "virtio_ring"]);
        assert!(parse_depends(b"\0depends=\0").is_empty());
    }
}
