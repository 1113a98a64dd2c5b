//! Sets `RINGMQ_BUILD_COMMIT` for `ringmq_build_info{commit}`: the commit of the checkout being
//! built (`git rev-parse --short=12 HEAD`), or `unknown` when there is no git (a source
//! package, a container build from a copied tree) — a build never fails for want of it.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

fn main() {
    let commit = std::env::var("RINGMQ_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=RINGMQ_BUILD_COMMIT={commit}");
    println!("cargo:rerun-if-env-changed=RINGMQ_BUILD_COMMIT");
    // Rebuilt when HEAD moves: HEAD itself (a checkout), the branch it names (a commit), and
    // packed refs. Paths from git, so worktrees (whose `.git` is a file) work too.
    // A path that does not exist would make cargo rerun this on every build: only those that do.
    let mut watch = Vec::new();
    if let Some(git_dir) = git(&["rev-parse", "--git-dir"]) {
        watch.push(Path::new(&git_dir).join("HEAD"));
    }
    if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
        let common = Path::new(&common);
        watch.push(common.join("packed-refs"));
        if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch.push(common.join(head_ref));
        }
    }
    for path in watch.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
