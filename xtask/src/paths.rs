//! Where things are: the workspace root and the build folder.

use std::path::PathBuf;

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// `build/` at the workspace root: downloaded packages, images, runner files.
pub fn build_dir() -> PathBuf {
    workspace_root().join("build")
}
