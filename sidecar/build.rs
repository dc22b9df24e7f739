//! Links the sidecar against the prebuilt libduckdb (see docs/build.md) and embeds
//! an rpath so the binary finds the library without LD_LIBRARY_PATH: first the
//! build-time library directory, then `../lib` next to the binary (the image layout).

fn main() {
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    println!("cargo:rerun-if-changed=../migrations");
    if let Ok(dir) = std::env::var("DUCKDB_LIB_DIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/../lib");
}
