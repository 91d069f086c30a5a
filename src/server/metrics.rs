//! Counters for `/metrics`, in Prometheus' text format.

use std::sync::atomic::{AtomicU64, Ordering};

use super::cache::CacheStats;

/// Updated by the handlers and the scheduler; read by `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub failed_requests: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub cached_prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub steps: AtomicU64,
    /// Requests waiting for a place in the batch.
    pub queued: AtomicU64,
    /// Requests in the batch.
    pub active: AtomicU64,
    pub cache_gpu_entries: AtomicU64,
    pub cache_host_entries: AtomicU64,
    pub cache_host_bytes: AtomicU64,
    /// Generated tokens per second over the last few seconds, as f64 bits.
    tokens_per_second: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set_tokens_per_second(&self, rate: f64) {
        self.tokens_per_second.store(rate.to_bits(), Ordering::Relaxed);
    }

    pub fn set_cache(&self, stats: CacheStats) {
        self.cache_gpu_entries.store(stats.gpu_entries as u64, Ordering::Relaxed);
        self.cache_host_entries.store(stats.host_entries as u64, Ordering::Relaxed);
        self.cache_host_bytes.store(stats.host_bytes, Ordering::Relaxed);
    }

    /// The metrics as Prometheus text; `max_batch` gives the batch occupancy.
    pub fn render(&self, max_batch: usize) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let active = get(&self.active);
        let rate = f64::from_bits(get(&self.tokens_per_second));
        let rows: [(&str, &str, &str, String); 15] = [
            (
                "requests_total",
                "counter",
                "Requests received on the completion endpoints.",
                get(&self.requests).to_string(),
            ),
            (
                "failed_requests_total",
                "counter",
                "Requests answered with an error.",
                get(&self.failed_requests).to_string(),
            ),
            (
                "prompt_tokens_total",
                "counter",
                "Prompt tokens of admitted requests.",
                get(&self.prompt_tokens).to_string(),
            ),
            (
                "cached_prompt_tokens_total",
                "counter",
                "Prompt tokens not read because the state cache held them.",
                get(&self.cached_prompt_tokens).to_string(),
            ),
            (
                "completion_tokens_total",
                "counter",
                "Generated tokens.",
                get(&self.completion_tokens).to_string(),
            ),
            (
                "cache_hits_total",
                "counter",
                "Requests that started from a cached state.",
                get(&self.cache_hits).to_string(),
            ),
            (
                "cache_misses_total",
                "counter",
                "Requests that found no cached prefix.",
                get(&self.cache_misses).to_string(),
            ),
            ("steps_total", "counter", "Engine steps run.", get(&self.steps).to_string()),
            (
                "queue_depth",
                "gauge",
                "Requests waiting for a place in the batch.",
                get(&self.queued).to_string(),
            ),
            ("active_sequences", "gauge", "Requests in the batch.", active.to_string()),
            (
                "batch_occupancy",
                "gauge",
                "Requests in the batch over its size.",
                format!("{}", active as f64 / max_batch.max(1) as f64),
            ),
            (
                "generated_tokens_per_second",
                "gauge",
                "Generated tokens per second over the last few seconds.",
                format!("{rate:.3}"),
            ),
            (
                "cache_gpu_entries",
                "gauge",
                "Cached states in GPU memory.",
                get(&self.cache_gpu_entries).to_string(),
            ),
            (
                "cache_host_entries",
                "gauge",
                "Cached states spilled to host memory.",
                get(&self.cache_host_entries).to_string(),
            ),
            (
                "cache_host_bytes",
                "gauge",
                "Host memory held by spilled states.",
                get(&self.cache_host_bytes).to_string(),
            ),
        ];
        rows.iter()
            .map(|(name, kind, help, value)| {
                format!("# HELP rwkv_{name} {help}\n# TYPE rwkv_{name} {kind}\nrwkv_{name} {value}\n")
            })
            .collect()
    }
}
