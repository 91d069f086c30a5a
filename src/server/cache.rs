//! The state cache: an RNN's whole context is its state, so the state after a token prefix
//! replaces reading that prefix again. States are kept by their prefix, in GPU memory (state
//! slots of the engine) up to a number of slots, then spilled to host memory up to a byte budget
//! that also holds every key, least recently used first.
//!
//! The prefix index is a map from the hash of each key to its entries, with the key lengths
//! present: a lookup hashes the prompt's prefixes once and tries the lengths from the longest,
//! checking the tokens of any match. It plays the part of a trie of token ids without a node per
//! token (long prompts would make such a trie large, and deep to walk or free recursively).

use std::collections::{BTreeMap, HashMap};

use crate::error::{Error, Result};
use crate::runtime::{Engine, Session, State};

/// Where a cached state is.
enum Stored {
    /// A state slot of its own.
    Gpu(Session),
    Host(State),
}

struct Entry {
    tokens: Vec<u32>,
    hash: u64,
    stored: Stored,
    last_used: u64,
}

/// The hashes of every prefix of `tokens`: `[i]` is the hash of `tokens[..i]`.
fn prefix_hashes(tokens: &[u32]) -> Vec<u64> {
    let mut hashes = Vec::with_capacity(tokens.len() + 1);
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    hashes.push(hash);
    for &token in tokens {
        hash = (hash.rotate_left(5) ^ u64::from(token)).wrapping_mul(0x517c_c1b7_2722_0a95);
        hashes.push(hash);
    }
    hashes
}

/// What the cache holds, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub gpu_entries: usize,
    pub host_entries: usize,
    /// Spilled states and every key.
    pub host_bytes: u64,
}

pub struct StateCache {
    engine: Engine,
    entries: HashMap<u64, Entry>,
    /// Entries by the hash of their key.
    by_hash: HashMap<u64, Vec<u64>>,
    /// How many entries have a key of each length.
    lengths: BTreeMap<usize, usize>,
    next_id: u64,
    clock: u64,
    gpu_slots: usize,
    gpu_entries: usize,
    host_budget: u64,
    host_bytes: u64,
    state_bytes: u64,
}

impl StateCache {
    /// A cache of up to `gpu_slots` states in the engine's slots and `host_budget` bytes of
    /// keys and spilled states in host memory.
    pub fn new(engine: &Engine, gpu_slots: usize, host_budget: u64) -> StateCache {
        let config = &engine.model().config;
        let state_bytes = (config.layers * (2 * config.embd + engine.wkv_len()) * 4) as u64;
        StateCache {
            engine: engine.clone(),
            entries: HashMap::new(),
            by_hash: HashMap::new(),
            lengths: BTreeMap::new(),
            next_id: 0,
            clock: 0,
            gpu_slots,
            gpu_entries: 0,
            host_budget,
            host_bytes: 0,
            state_bytes,
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            gpu_entries: self.gpu_entries,
            host_entries: self.entries.len() - self.gpu_entries,
            host_bytes: self.host_bytes,
        }
    }

    /// The longest cached prefix of `prompt` that leaves at least one token to read: its length
    /// and its entry.
    pub fn lookup(&self, prompt: &[u32]) -> Option<(usize, u64)> {
        let hashes = prefix_hashes(&prompt[..prompt.len().saturating_sub(1)]);
        self.lengths.keys().rev().filter(|&&len| len < hashes.len()).find_map(|&len| {
            let candidates = self.by_hash.get(&hashes[len])?;
            candidates.iter().find(|id| self.entries[id].tokens == prompt[..len]).map(|&id| (len, id))
        })
    }

    /// Puts entry `id`'s state into `session`.
    pub fn restore(&mut self, id: u64, session: &mut Session) -> Result<()> {
        self.clock += 1;
        let entry =
            self.entries.get_mut(&id).ok_or_else(|| Error::Internal(format!("no cache entry {id}")))?;
        entry.last_used = self.clock;
        match &entry.stored {
            Stored::Gpu(cached) => self.engine.copy_slot(cached.slot(), session.slot()),
            Stored::Host(state) => session.set_state(state),
        }
    }

    /// Keeps the state of slot `slot`, which has read exactly `tokens`.
    pub fn insert(&mut self, tokens: &[u32], slot: usize) -> Result<()> {
        let key_bytes = tokens.len() as u64 * 4;
        if tokens.is_empty() || key_bytes > self.host_budget {
            return Ok(());
        }
        self.clock += 1;
        let hash = *prefix_hashes(tokens).last().expect("one hash per prefix");
        let same =
            self.by_hash.get(&hash).and_then(|ids| ids.iter().find(|id| self.entries[id].tokens == tokens));
        if let Some(&id) = same {
            // The same prefix gives the same state: keep the one there, fresher.
            if let Some(entry) = self.entries.get_mut(&id) {
                entry.last_used = self.clock;
            }
            return Ok(());
        }
        let stored = match self.gpu_slot()? {
            Some(session) => {
                self.engine.copy_slot(slot, session.slot())?;
                Stored::Gpu(session)
            }
            None if key_bytes + self.state_bytes <= self.host_budget => {
                let reader = Session::new(&self.engine)?;
                self.engine.copy_slot(slot, reader.slot())?;
                Stored::Host(reader.state()?)
            }
            None => return Ok(()),
        };
        let entry = Entry { tokens: tokens.to_vec(), hash, stored, last_used: self.clock };
        self.make_room(self.host_cost(&entry));
        let id = self.next_id;
        self.next_id += 1;
        self.add(id, entry);
        Ok(())
    }

    /// A slot for a new GPU entry: a free one, or the least recently used GPU entry's, whose
    /// state moves to host memory (or is dropped when it does not fit there).
    fn gpu_slot(&mut self) -> Result<Option<Session>> {
        if self.gpu_entries < self.gpu_slots {
            return Ok(Some(Session::new(&self.engine)?));
        }
        let Some(oldest) = self.least_recent(|e| matches!(e.stored, Stored::Gpu(_))) else { return Ok(None) };
        let entry = self.remove(oldest).expect("found above");
        let Stored::Gpu(session) = entry.stored else { unreachable!("a GPU entry") };
        if entry.tokens.len() as u64 * 4 + self.state_bytes <= self.host_budget {
            let spilled = Entry { stored: Stored::Host(session.state()?), ..entry };
            self.make_room(self.host_cost(&spilled));
            self.add(oldest, spilled);
        }
        Ok(Some(session))
    }

    /// The host memory an entry takes: its key, and its state when spilled.
    fn host_cost(&self, entry: &Entry) -> u64 {
        let state = if matches!(entry.stored, Stored::Host(_)) { self.state_bytes } else { 0 };
        entry.tokens.len() as u64 * 4 + state
    }

    /// Drops the least recently used entries until `more` bytes fit the host budget.
    fn make_room(&mut self, more: u64) {
        while self.host_bytes + more > self.host_budget {
            let Some(oldest) = self.least_recent(|_| true) else { break };
            self.remove(oldest);
        }
    }

    fn add(&mut self, id: u64, entry: Entry) {
        self.host_bytes += self.host_cost(&entry);
        self.gpu_entries += usize::from(matches!(entry.stored, Stored::Gpu(_)));
        self.by_hash.entry(entry.hash).or_default().push(id);
        *self.lengths.entry(entry.tokens.len()).or_default() += 1;
        self.entries.insert(id, entry);
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.entries.remove(&id)?;
        self.host_bytes -= self.host_cost(&entry);
        self.gpu_entries -= usize::from(matches!(entry.stored, Stored::Gpu(_)));
        if let Some(ids) = self.by_hash.get_mut(&entry.hash) {
            ids.retain(|&other| other != id);
            if ids.is_empty() {
                self.by_hash.remove(&entry.hash);
            }
        }
        let len = entry.tokens.len();
        if let Some(count) = self.lengths.get_mut(&len) {
            *count -= 1;
            if *count == 0 {
                self.lengths.remove(&len);
            }
        }
        Some(entry)
    }

    fn least_recent(&self, which: impl Fn(&Entry) -> bool) -> Option<u64> {
        self.entries.iter().filter(|(_, e)| which(e)).min_by_key(|(_, e)| e.last_used).map(|(&id, _)| id)
    }
}
