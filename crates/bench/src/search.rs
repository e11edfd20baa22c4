//! `emporium-bench search`: one run, one index, one query mix, measured three ways —
//! the engine called directly (the ceiling), the HTTP endpoint under concurrency (with the
//! popular-query cache off, then on), and PostgreSQL full-text search (tsvector + GIN, the way
//! Saleor searches) over the same products — printing p50/p95/p99, QPS and the ratios.

use crate::measure::{CpuTimes, Stats, closed_loop, rss_mib};
use anyhow::Context;
use emporium::App;
use emporium::seed::categories;
use emporium_kernel::db::{Db, Exec, ServiceMigrations};
use emporium_search::model::SearchRequest;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct SearchBenchOptions {
    pub products: u64,
    pub seconds: u64,
    pub concurrency: usize,
    /// PostgreSQL for the full-text baseline; `None` skips it.
    pub pg_url: Option<String>,
    /// Query kinds to keep; empty keeps the whole mix.
    pub only: Vec<String>,
}

/// One query of the mix: its kind, its parameters, and its words (for the PostgreSQL baseline).
#[derive(Clone, Debug)]
pub struct BenchQuery {
    pub kind: &'static str,
    pub params: Vec<(String, String)>,
    pub text: String,
}

impl BenchQuery {
    fn request(&self) -> SearchRequest {
        let map: HashMap<String, String> = self.params.iter().cloned().collect();
        SearchRequest::parse(&map).expect("benchmark queries are valid")
    }
}

/// Swaps two neighbouring letters in the middle of longer words: the commonest typo.
fn typo(word: &str, salt: usize) -> String {
    let mut chars: Vec<char> = word.chars().collect();
    if chars.len() >= 5 {
        let i = 1 + salt % (chars.len() - 3);
        chars.swap(i, i + 1);
    }
    chars.into_iter().collect()
}

/// A deterministic, realistic mix: plain words, typos, synonyms, filters, category browsing
/// with facets, and sorted queries.
pub fn query_mix(n: usize, category_ids: &HashMap<String, String>) -> Vec<BenchQuery> {
    let specs = categories();
    let leaves: Vec<_> = specs.iter().filter(|s| s.nouns.is_some()).collect();
    let synonyms = ["notebook", "mobile", "television", "trainers", "couch", "earphone", "cellphone"];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let spec = leaves[i % leaves.len()];
        let nouns = spec.nouns.unwrap_or_default();
        let noun = nouns[(i / leaves.len()) % nouns.len()].to_lowercase();
        let brand = spec.brands[(i / 7) % spec.brands.len()];
        let word = noun.split_whitespace().last().unwrap_or("item").to_owned();
        let p = |k: &str, v: String| (k.to_owned(), v);
        let (kind, params, text) = match i % 6 {
            0 => ("plain", vec![p("q", format!("{} {word}", brand.to_lowercase()))], format!("{brand} {word}")),
            1 => ("typo", vec![p("q", typo(&word, i))], typo(&word, i)),
            2 => {
                let s = synonyms[i % synonyms.len()];
                ("synonym", vec![p("q", s.to_owned())], s.to_owned())
            }
            3 => {
                let (lo, hi) = spec.price;
                let mid = (lo + hi) / 2;
                (
                    "filtered",
                    vec![p("q", word.clone()), p("brand", brand.to_owned()), p("price", format!("{lo}-{mid}"))],
                    word.clone(),
                )
            }
            4 => {
                let id = category_ids.get(spec.name).cloned().unwrap_or_default();
                ("faceted", vec![p("category", id), p("sort", "rating".to_owned())], word.clone())
            }
            _ => {
                let sort = ["price_asc", "price_desc", "newest"][i % 3];
                ("sorted", vec![p("q", word.clone()), p("sort", sort.to_owned())], word.clone())
            }
        };
        out.push(BenchQuery { kind, params, text });
    }
    out
}

pub async fn run_search_bench(app: App, options: SearchBenchOptions) -> anyhow::Result<()> {
    let catalog = app.catalog_service().context("bench needs the catalog")?.clone();
    let search = app.search_service().context("bench needs search")?.clone();
    let existing = catalog.count_products().await? as u64;
    if existing < options.products {
        emporium::seed::load::seed_products(&app, options.products - existing).await?;
    }
    let total = catalog.count_products().await? as u64;
    if search.document_count() != total {
        app.reindex_search().await?;
    }
    let category_ids: HashMap<String, String> =
        catalog.categories().await?.into_iter().map(|c| (c.name, c.id.to_string())).collect();
    let mut mix = query_mix(2_000, &category_ids);
    mix.retain(|q| options.only.is_empty() || options.only.iter().any(|kind| kind == q.kind));
    anyhow::ensure!(
        !mix.is_empty(),
        "--only names no query kind of the mix (plain, typo, synonym, filtered, faceted, sorted)"
    );
    let queries = Arc::new(mix);
    let duration = Duration::from_secs(options.seconds.max(1));
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    println!(
        "search benchmark: {total} products, {} distinct queries, {} s per run, {cores} cores",
        queries.len(),
        duration.as_secs()
    );

    // Warm up: every query once (page cache, term dictionaries). The cost of a query grows
    // with its matches (every one is counted for the facets), so their mean is printed.
    let (mut matches, mut with_results) = (0, 0);
    for q in queries.iter() {
        let total = search.execute(&q.request())?.total;
        matches += total;
        with_results += usize::from(total > 0);
    }
    println!("mean matches per query: {}", matches / queries.len().max(1));
    println!("queries with results: {with_results}/{}", queries.len());

    let cpu_before_engine = CpuTimes::now();
    let (raw, per_kind) = raw_loop(&search, &queries, cores, duration);
    let engine_cpu = CpuTimes::now().since(&cpu_before_engine);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/api/v1/search", listener.local_addr()?);
    let shutdown = app.shutdown_token();
    let pg_catalog = app.catalog.clone().context("catalog client")?;
    let server = tokio::spawn(app.serve(listener));

    // wrk (C, its own process) loads the server with far less CPU than an in-process client;
    // on a 2-core machine that matters. Without it the built-in client is used.
    let client = if wrk_available().await { "wrk" } else { "built-in client" };
    search.set_cache_enabled(false);
    let cpu_before_http = CpuTimes::now();
    let http = load(&base, &queries, options.concurrency, duration).await?;
    let http_cpu = CpuTimes::now().since(&cpu_before_http);
    search.set_cache_enabled(true);
    let (hits_before, misses_before) = search.cache_stats();
    let http_cached = load(&base, &queries, options.concurrency, duration).await?;
    let (hits, misses) = search.cache_stats();
    let hit_rate = (hits - hits_before) as f64 / ((hits - hits_before) + (misses - misses_before)).max(1) as f64;
    let rss = rss_mib();

    let pg = match &options.pg_url {
        Some(url) => Some(postgres_fts(url, &pg_catalog, total, &queries, options.concurrency, duration).await?),
        None => None,
    };
    shutdown.cancel();
    server.await.context("server task")??;

    println!();
    println!("| run | QPS | p50 ms | p95 ms | p99 ms | requests | errors |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!("{}", raw.row(&format!("engine, called directly ({cores} threads)")));
    println!("{}", http.row(&format!("HTTP GET /search, cache off ({} connections, {client})", options.concurrency)));
    println!(
        "{}",
        http_cached.row(&format!("HTTP GET /search, popular-query cache on ({:.0}% hits)", hit_rate * 100.0))
    );
    if let Some(pg) = &pg {
        println!("{}", pg.row(&format!("PostgreSQL full-text, tsvector + GIN ({} clients)", options.concurrency)));
    }
    println!();
    println!("engine latency by query kind:");
    println!();
    println!("| kind | QPS share | p50 ms | p95 ms | p99 ms | requests | errors |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (kind, stats) in &per_kind {
        println!("{}", stats.row(kind));
    }
    println!();
    println!(
        "CPU per request: engine {:.2} ms; HTTP server {:.2} ms + load generator {:.2} ms; cores busy: engine {:.2}, HTTP {:.2}",
        engine_cpu.own * 1000.0 / raw.requests.max(1) as f64,
        http_cpu.own * 1000.0 / http.requests.max(1) as f64,
        http_cpu.children * 1000.0 / http.requests.max(1) as f64,
        engine_cpu.own / duration.as_secs_f64(),
        (http_cpu.own + http_cpu.children) / duration.as_secs_f64(),
    );
    println!("HTTP (cache off) / engine QPS: {:.2}  (target >= 0.7)", http.qps / raw.qps.max(1e-9));
    if let Some(pg) = &pg {
        println!("HTTP (cache off) / PostgreSQL FTS QPS: {:.1}  (target >= 20)", http.qps / pg.qps.max(1e-9));
    }
    println!("HTTP p99 (cache off): {:.2} ms  (target <= 20 ms)", http.p99.as_secs_f64() * 1000.0);
    println!("process RSS after the HTTP runs: {rss} MiB  (target < 1024 MiB for 1M products)");
    Ok(())
}

/// The engine loop: every thread runs the mix's requests back to back. Returns the overall
/// figures and the same per query kind.
fn raw_loop(
    search: &Arc<emporium_search::SearchService>,
    queries: &Arc<Vec<BenchQuery>>,
    threads: usize,
    duration: Duration,
) -> (Stats, Vec<(&'static str, Stats)>) {
    let requests: Vec<SearchRequest> = queries.iter().map(BenchQuery::request).collect();
    let start = Instant::now();
    let deadline = start + duration;
    let mut all = Vec::new();
    let mut errors = 0;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let requests = &requests;
                scope.spawn(move || {
                    let mut latencies = Vec::new();
                    let mut errors = 0;
                    let mut i = t * 7919;
                    while Instant::now() < deadline {
                        let n = i % requests.len();
                        let began = Instant::now();
                        if search.execute(&requests[n]).is_err() {
                            errors += 1;
                        }
                        latencies.push((n, began.elapsed()));
                        i += 1;
                    }
                    (latencies, errors)
                })
            })
            .collect();
        for handle in handles {
            let (latencies, e) = handle.join().expect("bench thread");
            all.extend(latencies);
            errors += e;
        }
    });
    let elapsed = start.elapsed();
    let mut kinds: Vec<&'static str> = queries.iter().map(|q| q.kind).collect();
    kinds.dedup();
    kinds.sort();
    kinds.dedup();
    let per_kind = kinds
        .into_iter()
        .map(|kind| {
            let latencies = all.iter().filter(|(n, _)| queries[*n].kind == kind).map(|(_, d)| *d).collect();
            (kind, Stats::from_latencies(latencies, 0, elapsed))
        })
        .collect();
    (Stats::from_latencies(all.into_iter().map(|(_, d)| d).collect(), errors, elapsed), per_kind)
}

async fn wrk_available() -> bool {
    tokio::process::Command::new("wrk").arg("--version").output().await.is_ok()
}

async fn load(
    base: &str,
    queries: &Arc<Vec<BenchQuery>>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Stats> {
    if wrk_available().await {
        wrk_load(base, queries, concurrency, duration).await
    } else {
        http_load(base, queries, concurrency, duration).await
    }
}

/// Runs wrk over the mix's URLs (a Lua script rotates through them) and reads the summary its
/// `done` hook prints.
async fn wrk_load(
    base: &str,
    queries: &Arc<Vec<BenchQuery>>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Stats> {
    let url = reqwest::Url::parse(base)?;
    let origin = format!("{}://{}", url.scheme(), url.authority());
    let mut list = String::new();
    for q in queries.iter() {
        let u = reqwest::Url::parse_with_params(base, &q.params)?;
        // Percent-encoded URLs contain no quotes or backslashes, so they are valid Lua strings.
        list.push_str(&format!("  \"{}?{}\",\n", u.path(), u.query().unwrap_or("")));
    }
    let script = format!(
        r#"local paths = {{
{list}}}
local i = 0
init = function(args) i = math.random(#paths) end
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("EMPORIUM %d %d %d %d %d %d\n", latency:percentile(50), latency:percentile(95),
    latency:percentile(99), summary.requests, e.connect + e.read + e.write + e.status + e.timeout, summary.duration))
end
"#
    );
    let script_path = std::env::temp_dir().join(format!("emporium-wrk-{}.lua", std::process::id()));
    std::fs::write(&script_path, script)?;
    let output = tokio::process::Command::new("wrk")
        .args(["-t2", &format!("-c{concurrency}"), &format!("-d{}s", duration.as_secs()), "--timeout", "10s", "-s"])
        .arg(&script_path)
        .arg(&origin)
        .output()
        .await
        .context("running wrk")?;
    std::fs::remove_file(&script_path).ok();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("EMPORIUM "))
        .with_context(|| format!("wrk printed no summary: {stdout}"))?;
    let n: Vec<u64> = line.split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0)).collect();
    anyhow::ensure!(n.len() == 6, "unexpected wrk summary: {line}");
    let us = Duration::from_micros;
    Ok(Stats::from_summary(n[3] as usize, n[4] as usize, us(n[5]), us(n[0]), us(n[1]), us(n[2])))
}

/// The built-in HTTP load generator (when `wrk` is not installed).
async fn http_load(
    base: &str,
    queries: &Arc<Vec<BenchQuery>>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Stats> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?;
    let urls: Arc<Vec<reqwest::Url>> =
        Arc::new(queries.iter().map(|q| reqwest::Url::parse_with_params(base, &q.params)).collect::<Result<_, _>>()?);
    closed_loop(concurrency, duration, move |i| {
        let client = client.clone();
        let url = urls[i % urls.len()].clone();
        async move {
            match client.get(url).send().await {
                Ok(res) if res.status().is_success() => res.bytes().await.is_ok(),
                _ => false,
            }
        }
    })
    .await
}

/// Loads the same products into a PostgreSQL table with a weighted tsvector and a GIN index,
/// then runs the mix's words through `websearch_to_tsquery`, ranked by `ts_rank`.
async fn postgres_fts(
    url: &str,
    catalog: &emporium_catalog::api::CatalogClient,
    total: u64,
    queries: &Arc<Vec<BenchQuery>>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Stats> {
    let none = ServiceMigrations {
        sqlite: sqlx::migrate::Migrator::with_migrations(Vec::new()),
        postgres: sqlx::migrate::Migrator::with_migrations(Vec::new()),
    };
    let db = Db::open_postgres("bench_fts", url, concurrency as u32 + 1, &none).await?;
    let Exec::Postgres(pool) = db.exec() else { anyhow::bail!("the baseline needs PostgreSQL") };
    // The tables of earlier versions, loaded in id order and in category order only.
    sqlx::query("DROP TABLE IF EXISTS products_fts, products_fts_by_category").execute(pool).await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS products_fts_sorted (
            id UUID PRIMARY KEY, title TEXT NOT NULL, brand TEXT NOT NULL, description TEXT NOT NULL, price BIGINT NOT NULL,
            search TSVECTOR GENERATED ALWAYS AS (
                setweight(to_tsvector('english', title), 'A') || setweight(to_tsvector('english', brand), 'B') ||
                setweight(to_tsvector('english', description), 'C')) STORED)",
    )
    .execute(pool)
    .await?;
    let loaded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products_fts_sorted").fetch_one(pool).await?;
    if loaded as u64 != total {
        sqlx::query("DROP INDEX IF EXISTS products_fts_sorted_search").execute(pool).await?;
        sqlx::query("TRUNCATE products_fts_sorted").execute(pool).await?;
        let mut progress = emporium::progress::Progress::new("loading PostgreSQL baseline", total);
        // In the search index's order (category tree, then brand; see `SearchService::reindex`),
        // so both stores keep a category's products, and a brand's within it, side by side.
        let mut scan =
            emporium_catalog::api::TreeOrderScan::start(catalog.clone()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut done = 0u64;
        while let Some((_, batch)) = scan.next_batch(5_000).await.map_err(|e| anyhow::anyhow!("{e}"))? {
            done += batch.len() as u64;
            let ids: Vec<uuid::Uuid> = batch.iter().map(|p| p.id.0).collect();
            let titles: Vec<&str> = batch.iter().map(|p| p.title.as_str()).collect();
            let brands: Vec<&str> = batch.iter().map(|p| p.brand.as_str()).collect();
            let descriptions: Vec<&str> = batch.iter().map(|p| p.description.as_str()).collect();
            let prices: Vec<i64> = batch.iter().map(|p| p.price.amount).collect();
            sqlx::query(
                "INSERT INTO products_fts_sorted (id, title, brand, description, price)
                 SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[])",
            )
            .bind(&ids)
            .bind(&titles)
            .bind(&brands)
            .bind(&descriptions)
            .bind(&prices)
            .execute(pool)
            .await?;
            progress.update(done);
        }
        progress.finish(done);
        eprintln!("building the GIN index…");
        sqlx::query("CREATE INDEX products_fts_sorted_search ON products_fts_sorted USING GIN (search)")
            .execute(pool)
            .await?;
        sqlx::query("ANALYZE products_fts_sorted").execute(pool).await?;
    }
    let texts: Arc<Vec<String>> = Arc::new(queries.iter().map(|q| q.text.clone()).collect());
    let pool = pool.clone();
    let stats = closed_loop(concurrency, duration, move |i| {
        let pool = pool.clone();
        let text = texts[i % texts.len()].clone();
        async move {
            sqlx::query(
                "SELECT id, ts_rank(search, q) AS rank FROM products_fts_sorted, websearch_to_tsquery('english', $1) q
                 WHERE search @@ q ORDER BY rank DESC LIMIT 20",
            )
            .bind(text)
            .fetch_all(&pool)
            .await
            .is_ok()
        }
    })
    .await?;
    db.close().await;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_is_valid_varied_and_deterministic() {
        let ids = HashMap::from([("Laptops".to_owned(), emporium_kernel::ids::CategoryId::new().to_string())]);
        let mix = query_mix(600, &ids);
        let kinds: std::collections::HashSet<&str> = mix.iter().map(|q| q.kind).collect();
        assert_eq!(kinds.len(), 6);
        for q in mix.iter().filter(|q| q.kind != "faceted" || !q.params[0].1.is_empty()) {
            q.request();
        }
        assert_eq!(format!("{:?}", query_mix(50, &ids)), format!("{:?}", query_mix(50, &ids)));
        assert_eq!(typo("laptop", 0), "lpatop");
    }

    #[test]
    fn percentiles() {
        let latencies: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let stats = Stats::from_latencies(latencies, 0, Duration::from_secs(1));
        assert_eq!(stats.p50, Duration::from_millis(50));
        assert_eq!(stats.p99, Duration::from_millis(99));
        assert_eq!(stats.qps, 100.0);
    }
}
