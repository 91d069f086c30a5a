// Choosing each sequence's next token on the GPU, so that only its id travels back to the CPU.
// One workgroup per row of logits.
//
// The token's logit first gets its slot's logit bias (banned tokens: a bias of BANNED) and is
// lowered by the penalties of the tokens this sequence generated so far (counts: occurrences kept
// per state slot on the GPU, decayed by the choice's `decay` and bumped here). A constrained
// choice (`masked`) then sets the tokens its row of `masks` leaves out to MASKED, below any
// banned token, so that they are never chosen; with none left, it writes NOTHING_ALLOWED. Greedy takes the
// first largest logit. Otherwise the kept set is every token whose logit reaches a threshold: the
// k-th largest logit (top-k), raised to the largest logit whose tokens at or above it carry top-p
// of the top-k mass at the temperature, raised to where the probability (at temperature 1) is
// min-p of the most likely token's. The thresholds are found by bisection over the logits'
// order-keeping u32 keys (32 halvings reach the exact value), each halving one pass over the row.
// Typical-p ranks every token by how near its surprise −log p (at temperature 1) is to the
// entropy, takes the nearest, fewest first, until they carry typical-p of the whole mass, and
// keeps those the other thresholds kept: its limit on |surprise − entropy| is found by bisection
// too (over the bits of non-negative floats, which keep their order). The draw walks the kept set
// in token order, weighing each token relative to the largest kept logit (typical-p may drop the
// largest of all, and at a low temperature the rest would weigh nothing against it); a token of
// zero weight is never chosen, and an empty set gives the most likely token. `sample_ref` in
// src/kernels/sample.rs is the same definition. A choice may also ask for the chosen token's log-probability and the most likely
// tokens' (at temperature 1, after the bias and penalties), written before the counts change.
//
// 256 threads (WORKGROUP_SIZE, set by the pipeline; workgroup_sum is reduce.wgsl's), because llvmpipe (lavapipe and its GL driver) stops every loop of an invocation
// once the invocation has run about 65535 loop iterations in all: with 64 threads a top-k and
// top-p choice over 65536 tokens would need ~66000 per thread and silently end unfinished.
//
// binding 0  params
// binding 1  logits  [rows, stride]
// binding 2  choices [rows]            how to choose for each row (Choice below)
// binding 3  counts  [slots, stride]   occurrences of each generated token (decayed)
// binding 4  bias    [slots, stride]   each slot's logit bias
// binding 5  tokens  [rows]            u32 out: the chosen token (NON_FINITE_LOGITS: none could be)
// binding 6  logprobs [rows, LOGPROB_STRIDE]  out: the chosen token's log-probability, then pairs
//                                     (token id bits, log-probability), most likely first
// binding 7  masks   [rows, mask_stride]  u32: bit t % 32 of word t / 32 set where a constrained
//                                     row allows token t

struct Params {
    vocab: u32,
    stride: u32,
    rows: u32,
    mask_stride: u32,
}

const SKIP: u32 = 0u;
const GREEDY: u32 = 1u;
const NON_FINITE_LOGITS: u32 = 0xffffffffu;  // the token written when a logit is NaN or infinite
const NOTHING_ALLOWED: u32 = 0xfffffffeu;    // the token written when a mask allows no token
// The logit of a token the mask leaves out: below a banned token's (BANNED, −1e30), and far enough
// from the lowest float that a temperature does not take its weight to −∞.
const MASKED: f32 = -2e30;

struct Choice {
    slot: u32,
    mode: u32,        // SKIP, GREEDY, or 2: draw
    top_k: u32,       // 0 keeps all
    temperature: f32,
    top_p: f32,
    presence: f32,
    frequency: f32,
    draw: f32,        // uniform in [0, 1)
    min_p: f32,       // 0 keeps all
    decay: f32,       // the occurrences' factor per generated token; 1 keeps them
    typical_p: f32,   // 1 keeps all
    logprobs: u32,    // 0: none; else 1 + how many of the most likely tokens to report
    masked: u32,      // 1: only the tokens of this row's mask may be chosen
    _reserved0: u32,
    _reserved1: u32,
    _reserved2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> choices: array<Choice>;
@group(0) @binding(3) var<storage, read_write> counts: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> tokens: array<u32>;
@group(0) @binding(6) var<storage, read_write> logprobs: array<f32>;
@group(0) @binding(7) var<storage, read> masks: array<u32>;

var<workgroup> best_value: array<f32, WORKGROUP_SIZE>;
var<workgroup> best_index: array<u32, WORKGROUP_SIZE>;
var<workgroup> uniform_flags: vec4<u32>;
var<workgroup> prefix: array<f32, WORKGROUP_SIZE>;
var<workgroup> chosen_token: u32;
var<workgroup> choice_flags: u32;  // 1: typical-p applies; 2: the mask allows no token
var<workgroup> logprob_count: u32;

// The largest float bits: a limit on |surprise − entropy| that keeps every token.
const ANY_SCORE: u32 = 0x7f7fffffu;

// Whether a token is kept: at or above the logit threshold, and within the typical-p limit of
// the mean (its score: |S/Z − (logit − max)| is |surprise − entropy|).
fn kept(logit: f32, low: u32, max_logit: f32, mean: f32, score_limit: u32) -> bool {
    return order_key(logit) >= low && bitcast<u32>(abs(mean - (logit - max_logit))) <= score_limit;
}

// The mass at temperature 1 of the tokens whose score is within `limit`.
fn typical_mass(row: u32, choice: Choice, limit: u32, max_logit: f32, mean: f32, thread: u32) -> f32 {
    var sum = 0.0;
    for (var t = thread; t < params.vocab; t += WORKGROUP_SIZE) {
        let d = penalized(row, choice, t) - max_logit;
        if bitcast<u32>(abs(mean - d)) <= limit {
            sum += exp(d);
        }
    }
    return workgroup_sum(sum, thread);
}

// Maps floats to u32 so that the order of the keys is the order of the floats (−0 as +0).
fn order_key(x: f32) -> u32 {
    let bits = select(bitcast<u32>(x), 0u, bitcast<u32>(x) == 0x80000000u);
    return select(bits | 0x80000000u, ~bits, (bits & 0x80000000u) != 0u);
}

fn allowed(row: u32, choice: Choice, token: u32) -> bool {
    return choice.masked == 0u || (masks[row * params.mask_stride + token / 32u] & (1u << (token % 32u))) != 0u;
}

fn penalized(row: u32, choice: Choice, token: u32) -> f32 {
    let at = choice.slot * params.stride + token;
    let count = counts[at];
    let logit = logits[row * params.stride + token] + bias[at];
    let penalized = select(logit, logit - choice.presence - count * choice.frequency, count > 0.0);
    return select(MASKED, penalized, allowed(row, choice, token));
}

// Sum over the row of `weight(logit)` for tokens with key >= threshold; every thread gets it.
fn mass_from(row: u32, choice: Choice, threshold: u32, max_logit: f32, thread: u32) -> f32 {
    var sum = 0.0;
    for (var t = thread; t < params.vocab; t += WORKGROUP_SIZE) {
        let logit = penalized(row, choice, t);
        if order_key(logit) >= threshold {
            sum += exp((logit - max_logit) / choice.temperature);
        }
    }
    return workgroup_sum(sum, thread);
}

fn count_from(row: u32, choice: Choice, threshold: u32, thread: u32) -> f32 {
    var n = 0.0;
    for (var t = thread; t < params.vocab; t += WORKGROUP_SIZE) {
        n += select(0.0, 1.0, order_key(penalized(row, choice, t)) >= threshold);
    }
    return workgroup_sum(n, thread);
}

// Every thread calls it with its best (value, token): the largest value of the workgroup, the
// lowest token among equals, is left in best_value[0] and best_index[0].
fn best_of_workgroup(value: f32, index: u32, thread: u32) {
    best_value[thread] = value;
    best_index[thread] = index;
    workgroupBarrier();
    for (var half_size = WORKGROUP_SIZE / 2u; half_size > 0u; half_size /= 2u) {
        if thread < half_size {
            let other = best_value[thread + half_size];
            let other_index = best_index[thread + half_size];
            if other > best_value[thread] || (other == best_value[thread] && other_index < best_index[thread]) {
                best_value[thread] = other;
                best_index[thread] = other_index;
            }
        }
        workgroupBarrier();
    }
}

// Every thread calls it, before `finish` changes the counts: the chosen token's log-probability
// (at temperature 1, after the bias and penalties) and the most likely tokens' with theirs, most
// likely first (ties: the lower id first), as many as the choice asks for.
fn report(row: u32, choice: Choice, token: u32, max_logit: f32, thread: u32) {
    let count = workgroupUniformLoad(&logprob_count);
    if count == 0u {
        return;
    }
    var z = 0.0;
    for (var t = thread; t < params.vocab; t += WORKGROUP_SIZE) {
        z += exp(penalized(row, choice, t) - max_logit);
    }
    let log_z = log(workgroup_sum(z, thread));
    let base = row * LOGPROB_STRIDE;
    if thread == 0u {
        logprobs[base] = penalized(row, choice, token) - max_logit - log_z;
    }
    var previous = max_logit;
    var previous_index = 0u;
    for (var k = 0u; k + 1u < count && k < params.vocab; k++) {
        var value = -0x1.fffffep+127f;
        var index = params.vocab;
        for (var t = thread; t < params.vocab; t += WORKGROUP_SIZE) {
            let logit = penalized(row, choice, t);
            let after = k == 0u || logit < previous || (logit == previous && t > previous_index);
            if after && (logit > value || (logit == value && t < index)) {
                value = logit;
                index = t;
            }
        }
        best_of_workgroup(value, index, thread);
        previous = best_value[0];
        previous_index = best_index[0];
        workgroupBarrier();
        if thread == 0u {
            logprobs[base + 1u + 2u * k] = bitcast<f32>(previous_index);
            logprobs[base + 2u + 2u * k] = previous - max_logit - log_z;
        }
    }
}

// Every thread calls it: the slot's occurrences decay, then the chosen token's grows by one.
fn finish(choice: Choice, row: u32, token: u32, thread: u32) {
    // Every thread is done reading the counts before any changes them.
    storageBarrier();
    if choice.decay != 1.0 {
        for (var t = thread; t < params.vocab; t += WORKGROUP_SIZE) {
            counts[choice.slot * params.stride + t] *= choice.decay;
        }
    }
    storageBarrier();
    if thread == 0u {
        tokens[row] = token;
        counts[choice.slot * params.stride + token] += 1.0;
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn sample(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) thread: u32) {
    let row = group.x;
    let choice = choices[row];
    if choice.mode == SKIP {
        return;
    }

    // The largest logit and its first token; NaNs and infinities are found by their bits, since
    // WGSL may assume that floats are finite (browsers reject an infinite constant, so the
    // search starts from the lowest finite f32).
    var value = -0x1.fffffep+127f;
    var index = 0u;
    var nans = 0.0;
    var open = 0.0;
    for (var t = thread; t < params.vocab; t += WORKGROUP_SIZE) {
        let logit = penalized(row, choice, t);
        if logit > value {
            value = logit;
            index = t;
        }
        nans += select(0.0, 1.0, (bitcast<u32>(logit) & 0x7fffffffu) >= 0x7f800000u);
        open += select(0.0, 1.0, allowed(row, choice, t));
    }
    nans = workgroup_sum(nans, thread);
    open = workgroup_sum(open, thread);
    best_of_workgroup(value, index, thread);
    let max_logit = best_value[0];
    let argmax = best_index[0];
    if thread == 0u {
        let all = choice.top_k == 0u || choice.top_k >= params.vocab;
        uniform_flags = vec4<u32>(choice.mode, select(1u, 0u, all), select(1u, 0u, choice.top_p >= 1.0), u32(nans > 0.0));
        choice_flags = select(0u, 1u, choice.typical_p < 1.0) | select(0u, 2u, open == 0.0);
        // At most what a row of `logprobs` holds (the host checks this too).
        logprob_count = min(choice.logprobs, 1u + MAX_TOP_LOGPROBS);
    }
    let flags = workgroupUniformLoad(&uniform_flags);
    let more_flags = workgroupUniformLoad(&choice_flags);
    if flags.w != 0u || (more_flags & 2u) != 0u {
        if thread == 0u {
            tokens[row] = select(NOTHING_ALLOWED, NON_FINITE_LOGITS, flags.w != 0u);
        }
        return;
    }
    if flags.x == GREEDY {
        report(row, choice, argmax, max_logit, thread);
        finish(choice, row, argmax, thread);
        return;
    }

    // top-k: the largest key with at least k tokens at or above it. Every bisection keeps
    // `low` a key that qualifies (key 0 is below every logit) and halves [low, high].
    var low = 0u;
    if flags.y != 0u {
        var high = order_key(max_logit);
        for (var i = 0u; i < 32u; i++) {
            let middle = low + (high - low + 1u) / 2u;
            let enough = count_from(row, choice, middle, thread) >= f32(choice.top_k);
            low = select(low, middle, enough);
            high = select(middle - 1u, high, enough);
        }
    }
    // top-p: the largest key whose tokens at or above it carry top_p of the top-k mass.
    if flags.z != 0u {
        let wanted = choice.top_p * mass_from(row, choice, low, max_logit, thread);
        var high = order_key(max_logit);
        for (var i = 0u; i < 32u; i++) {
            let middle = low + (high - low + 1u) / 2u;
            let enough = mass_from(row, choice, middle, max_logit, thread) >= wanted;
            low = select(low, middle, enough);
            high = select(middle - 1u, high, enough);
        }
    }
    // min-p: tokens at least min_p as likely as the most likely, at temperature 1.
    if choice.min_p > 0.0 {
        low = max(low, order_key(max_logit + log(choice.min_p)));
    }
    // typical-p: the smallest limit on the score whose tokens carry typical_p of the mass.
    var mean = 0.0;
    var score_limit = ANY_SCORE;
    if (more_flags & 1u) != 0u {
        var z = 0.0;
        var s = 0.0;
        for (var t = thread; t < params.vocab; t += WORKGROUP_SIZE) {
            let d = penalized(row, choice, t) - max_logit;
            z += exp(d);
            s += exp(d) * d;
        }
        z = workgroup_sum(z, thread);
        s = workgroup_sum(s, thread);
        mean = s / z;
        let wanted = choice.typical_p * z;
        var lowest = 0u;
        var highest = ANY_SCORE;
        for (var i = 0u; i < 32u; i++) {
            let middle = lowest + (highest - lowest) / 2u;
            let enough = typical_mass(row, choice, middle, max_logit, mean, thread) >= wanted;
            highest = select(highest, middle, enough);
            lowest = select(middle + 1u, lowest, enough);
        }
        score_limit = lowest;
    }

    // The draw: each thread sums a contiguous span of tokens, the spans' running sums locate the
    // span holding the draw, and that thread walks it.
    let span = (params.vocab + WORKGROUP_SIZE - 1u) / WORKGROUP_SIZE;
    let first = min(thread * span, params.vocab);
    let end = min(first + span, params.vocab);
    var largest_kept = -0x1.fffffep+127f;
    for (var t = first; t < end; t++) {
        let logit = penalized(row, choice, t);
        if kept(logit, low, max_logit, mean, score_limit) {
            largest_kept = max(largest_kept, logit);
        }
    }
    best_of_workgroup(largest_kept, 0u, thread);
    let reference = best_value[0];
    workgroupBarrier();
    var sum = 0.0;
    for (var t = first; t < end; t++) {
        let logit = penalized(row, choice, t);
        if kept(logit, low, max_logit, mean, score_limit) {
            sum += exp((logit - reference) / choice.temperature);
        }
    }
    prefix[thread] = sum;
    workgroupBarrier();
    if thread == 0u {
        var total = 0.0;
        for (var i = 0u; i < WORKGROUP_SIZE; i++) {
            total += prefix[i];
        }
        // The span holding the draw, and the mass before it; rounding can put the target at
        // the very end, and then the last span with mass takes it.
        let target_mass = choice.draw * total;
        var running = 0.0;
        var holder = 0u;
        var before = 0.0;
        for (var i = 0u; i < WORKGROUP_SIZE; i++) {
            if prefix[i] > 0.0 {
                holder = i;
                before = running;
                if target_mass < running + prefix[i] {
                    break;
                }
            }
            running += prefix[i];
        }
        best_index[0] = holder;
        best_value[0] = target_mass - before;
        // Nothing kept (typical-p can leave out what the other thresholds kept): the most likely.
        chosen_token = argmax;
        if total <= 0.0 {
            best_index[0] = WORKGROUP_SIZE;
        }
    }
    workgroupBarrier();
    if thread == best_index[0] {
        let remaining = best_value[0];
        var walked = 0.0;
        var chosen = argmax;
        for (var t = first; t < end; t++) {
            let logit = penalized(row, choice, t);
            let weight = exp((logit - reference) / choice.temperature);
            if kept(logit, low, max_logit, mean, score_limit) && weight > 0.0 {
                chosen = t;
                walked += weight;
                if walked > remaining {
                    break;
                }
            }
        }
        chosen_token = chosen;
    }
    let token = workgroupUniformLoad(&chosen_token);
    report(row, choice, token, max_logit, thread);
    finish(choice, row, token, thread);
}
