//! The state cache: an RNN's whole context is its state, so the state after a token prefix
//! replaces reading that prefix again. States are kept by prefix in a trie, in GPU memory (state
//! slots of the engine) up to a number of slots, then spilled to host memory up to a byte budget,
//! least recently used first.

use std::collections::HashMap;

use crate::error::Result;
use crate::runtime::{Engine, Session, State};

/// Where a cached state is.
enum Stored {
    /// A state slot of its own.
    Gpu(Session),
    Host(State),
}

struct Entry {
    tokens: Vec<u32>,
    stored: Stored,
    last_used: u64,
}

/// A trie node: the entry whose key ends here, if any, and the longer keys below.
#[derive(Default)]
struct Node {
    entry: Option<u64>,
    children: HashMap<u32, Node>,
}

impl Node {
    /// Removes the entry of `key`, pruning nodes left empty; returns whether this node is empty.
    fn remove(&mut self, key: &[u32]) -> bool {
        match key.split_first() {
            None => self.entry = None,
            Some((first, rest)) => {
                if self.children.get_mut(first).is_some_and(|child| child.remove(rest)) {
                    self.children.remove(first);
                }
            }
        }
        self.entry.is_none() && self.children.is_empty()
    }
}

/// What the cache holds, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub gpu_entries: usize,
    pub host_entries: usize,
    pub host_bytes: u64,
}

pub struct StateCache {
    engine: Engine,
    root: Node,
    entries: HashMap<u64, Entry>,
    next_id: u64,
    clock: u64,
    gpu_slots: usize,
    host_budget: u64,
    state_bytes: u64,
}

impl StateCache {
    /// A cache of up to `gpu_slots` states in the engine's slots and `host_budget` bytes of
    /// states in host memory.
    pub fn new(engine: &Engine, gpu_slots: usize, host_budget: u64) -> StateCache {
        let config = &engine.model().config;
        let state_bytes = (config.layers * (2 * config.embd + engine.wkv_len()) * 4) as u64;
        StateCache {
            engine: engine.clone(),
            root: Node::default(),
            entries: HashMap::new(),
            next_id: 0,
            clock: 0,
            gpu_slots,
            host_budget,
            state_bytes,
        }
    }

    pub fn stats(&self) -> CacheStats {
        let host_entries = self.entries.values().filter(|e| matches!(e.stored, Stored::Host(_))).count();
        CacheStats {
            gpu_entries: self.entries.len() - host_entries,
            host_entries,
            host_bytes: host_entries as u64 * self.state_bytes,
        }
    }

    /// The longest cached prefix of `prompt` that leaves at least one token to read: its length
    /// and its entry.
    pub fn lookup(&self, prompt: &[u32]) -> Option<(usize, u64)> {
        let mut node = &self.root;
        let mut best = None;
        for (depth, token) in prompt[..prompt.len().saturating_sub(1)].iter().enumerate() {
            let Some(child) = node.children.get(token) else { break };
            node = child;
            if let Some(id) = node.entry {
                best = Some((depth + 1, id));
            }
        }
        best
    }

    /// Puts entry `id`'s state into `session`.
    pub fn restore(&mut self, id: u64, session: &mut Session) -> Result<()> {
        self.clock += 1;
        let entry = self.entries.get_mut(&id).expect("looked-up entries stay until the next insert");
        entry.last_used = self.clock;
        match &entry.stored {
            Stored::Gpu(cached) => self.engine.copy_slot(cached.slot(), session.slot()),
            Stored::Host(state) => session.set_state(state),
        }
    }

    /// Keeps the state of slot `slot`, which has read exactly `tokens`.
    pub fn insert(&mut self, tokens: &[u32], slot: usize) -> Result<()> {
        if tokens.is_empty() || self.gpu_slots == 0 && self.host_budget < self.state_bytes {
            return Ok(());
        }
        self.clock += 1;
        if let Some(entry) = self.find(tokens).and_then(|id| self.entries.get_mut(&id)) {
            // The same prefix gives the same state: keep the one there, fresher.
            entry.last_used = self.clock;
            return Ok(());
        }
        let stored = match self.gpu_slot()? {
            Some(session) => {
                self.engine.copy_slot(slot, session.slot())?;
                Stored::Gpu(session)
            }
            None => {
                let reader = Session::new(&self.engine)?;
                self.engine.copy_slot(slot, reader.slot())?;
                let state = reader.state()?;
                self.make_host_room()?;
                Stored::Host(state)
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        let mut node = &mut self.root;
        for &token in tokens {
            node = node.children.entry(token).or_default();
        }
        node.entry = Some(id);
        self.entries.insert(id, Entry { tokens: tokens.to_vec(), stored, last_used: self.clock });
        Ok(())
    }

    /// The entry whose key is exactly `tokens`.
    fn find(&self, tokens: &[u32]) -> Option<u64> {
        let mut node = &self.root;
        for token in tokens {
            node = node.children.get(token)?;
        }
        node.entry
    }

    /// A slot for a new GPU entry: a free one, or the least recently used GPU entry's, whose
    /// state moves to host memory (or is dropped when the host budget holds nothing).
    fn gpu_slot(&mut self) -> Result<Option<Session>> {
        let on_gpu = |e: &Entry| matches!(e.stored, Stored::Gpu(_));
        if self.entries.values().filter(|e| on_gpu(e)).count() < self.gpu_slots {
            return Ok(Some(Session::new(&self.engine)?));
        }
        let Some(oldest) = self.least_recent(on_gpu) else { return Ok(None) };
        let entry = self.entries.remove(&oldest).expect("found above");
        let Stored::Gpu(session) = entry.stored else { unreachable!("a GPU entry") };
        if self.host_budget >= self.state_bytes {
            let state = session.state()?;
            self.make_host_room()?;
            self.entries.insert(oldest, Entry { stored: Stored::Host(state), ..entry });
        } else {
            self.root.remove(&entry.tokens);
        }
        Ok(Some(session))
    }

    /// Drops the least recently used host entries until one more state fits the budget.
    fn make_host_room(&mut self) -> Result<()> {
        let on_host = |e: &Entry| matches!(e.stored, Stored::Host(_));
        while self.stats().host_bytes + self.state_bytes > self.host_budget {
            let Some(oldest) = self.least_recent(on_host) else { break };
            let entry = self.entries.remove(&oldest).expect("found above");
            self.root.remove(&entry.tokens);
        }
        Ok(())
    }

    fn least_recent(&self, which: impl Fn(&Entry) -> bool) -> Option<u64> {
        self.entries.iter().filter(|(_, e)| which(e)).min_by_key(|(_, e)| e.last_used).map(|(&id, _)| id)
    }
}
