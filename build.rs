// The `mimic` binary and the workspace tests carry an rpath to the libtorch that torch-sys
// linked, so they run without LD_LIBRARY_PATH: first relative to themselves (`$ORIGIN`), so a
// clone moved elsewhere keeps working, then the absolute folder, so a binary copied out of
// the clone still finds the libtorch it was built against. The binary sits in
// `<target>/<profile>/`, the tests in `<target>/<profile>/deps/`.
//
// With the `cuda` feature, libtorch_cuda is linked even though no symbol of it is referenced
// directly (rustc links `--as-needed`, which would drop it and leave CUDA unavailable), and
// its own CUDA dependencies may be missing at link time (a CPU-only build machine): they
// are resolved on the CUDA machine, against its PyTorch 2.11.0 `lib/` folder.
use std::path::{Component, Path, PathBuf};

fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
        // OUT_DIR is <target>/<profile>/build/<package>-<hash>/out.
        let profile_dir = out.ancestors().nth(3).map(Path::to_path_buf);
        if let Some(rel) = profile_dir.and_then(|p| relative(&p, Path::new(&lib))) {
            let rel = rel.display();
            println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/{rel}");
            println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/../{rel}");
        }
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
    if std::env::var("CARGO_FEATURE_CUDA").is_ok() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,-lc10_cuda,--as-needed");
        println!("cargo:rustc-link-arg=-Wl,--allow-shlib-undefined");
    }
}

/// `to` relative to `from` (both absolute, without symbolic links resolved).
fn relative(from: &Path, to: &Path) -> Option<PathBuf> {
    let (from, to) = (
        std::fs::canonicalize(from).ok()?,
        std::fs::canonicalize(to).ok()?,
    );
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..from.len() {
        rel.push("..");
    }
    for c in &to[common..] {
        rel.push(c.as_os_str());
    }
    Some(rel)
}
