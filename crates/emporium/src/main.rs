/// mimalloc instead of glibc's malloc: glibc hands the large per-query buffers (tantivy's
/// fuzzy-match bitsets, the doc store's blocks) back to the kernel on free and page-faults them
/// in again zeroed on the next query; mimalloc keeps them for reuse (meilisearch does the same).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    emporium::cli::main()
}
