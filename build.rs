// The `mimic` binary and the workspace tests carry an rpath to the libtorch that torch-sys
// linked, so they run without LD_LIBRARY_PATH.
//
// With the `cuda` feature, libtorch_cuda is linked even though no symbol of it is referenced
// directly (rustc links `--as-needed`, which would drop it and leave CUDA unavailable), and
// its own CUDA dependencies may be missing at link time (a CPU-only build machine): they
// are resolved on the CUDA machine, against its PyTorch 2.11.0 `lib/` folder.
fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        println!("cargo:rustc-env=MIMIC_LIBTORCH_LIB={lib}");
    }
    if std::env::var("CARGO_FEATURE_CUDA").is_ok() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,-lc10_cuda,--as-needed");
        println!("cargo:rustc-link-arg=-Wl,--allow-shlib-undefined");
    }
}
