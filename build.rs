//! Stamps the binary with the commit it was built from, for
//! `wxkf-manager --version`: `WXKF_COMMIT` when set (a Docker build has no
//! `.git`); in a release build, `git describe` of the work tree (`-dirty`
//! with uncommitted changes); otherwise "unknown". Debug builds are not
//! stamped from git: watching HEAD would rebuild the crate after every
//! commit, and a stale stamp would be worse than none.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=WXKF_COMMIT");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let commit = std::env::var("WXKF_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| release.then(from_git).flatten())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=WXKF_COMMIT={}", commit.trim());
}

fn from_git() -> Option<String> {
    let git_dir = git(&["rev-parse", "--absolute-git-dir"])?;
    // Stamped again when HEAD moves, the branch it names moves, or the
    // index changes (the `-dirty` mark).
    let git_dir = Path::new(&git_dir);
    for watched in ["HEAD", "packed-refs", "index"] {
        println!("cargo:rerun-if-changed={}", git_dir.join(watched).display());
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        println!("cargo:rerun-if-changed={}", git_dir.join(branch).display());
    }
    git(&[
        "describe",
        "--always",
        "--dirty",
        "--abbrev=12",
        "--exclude=*",
    ])
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}
