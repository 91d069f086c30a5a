//! The C ABI of rwkv-wgpu: opaque handles for a model and its sessions, plain structs for
//! options, status codes for results. `include/rwkv_wgpu.h` is generated from this file by
//! cbindgen (`tests/c_api.rs` checks that it is current).
//!
//! Every function catches panics: none crosses into C. A failing call returns `NULL` or a
//! status other than `RWKV_OK`, and `rwkv_last_error` gives its message.
//!
//! Threads: a model (`RwkvModel`) may be used from any number of threads at once; a session
//! (`RwkvSession`) from one thread at a time; a cancel flag (`RwkvCancel`) from any thread, which
//! is what it is for. `rwkv_last_error` is per thread.

#![allow(clippy::missing_safety_doc)] // the header documents each function's contract

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use rwkv_wgpu::runtime::{
    CancelToken, Finish, GenerateOptions, SamplerOptions, Session, State, TextModel, TextModelOptions,
};

/// The call succeeded.
pub const RWKV_OK: i32 = 0;
/// The call failed; `rwkv_last_error` says why.
pub const RWKV_ERROR: i32 = 1;
/// The output buffer is too small; the length it needs was written to the length argument.
pub const RWKV_BUFFER_TOO_SMALL: i32 = 2;
/// The generation was stopped by the cancel flag or the callback.
pub const RWKV_CANCELLED: i32 = 3;

/// A loaded model, its engine and its tokenizer.
pub struct RwkvModel {
    inner: TextModel,
}

/// One sequence: its state lives on the GPU in one of the model's slots.
pub struct RwkvSession {
    session: Session,
    /// The model the session belongs to (sessions keep their engine alive themselves; this keeps
    /// the tokenizer).
    model: *const RwkvModel,
}

/// A flag that stops a generation before its next token.
pub struct RwkvCancel {
    token: CancelToken,
}

/// Options for loading a model. Start from `rwkv_options_default`; strings may be NULL.
#[repr(C)]
pub struct RwkvOptions {
    /// "f32", "bf16", "f16", "int8" or "nf4"; NULL keeps the file's precision.
    pub quant: *const c_char,
    /// "vulkan", "metal", "dx12" or "gl"; NULL picks the best.
    pub backend: *const c_char,
    /// The first GPU whose name contains this; NULL for the default choice.
    pub adapter: *const c_char,
    /// A tokenizer.json or World vocabulary .txt; NULL uses the model's own, else World.
    pub tokenizer: *const c_char,
    /// How many sessions can exist at once (default 4).
    pub slots: u32,
}

/// Options for `rwkv_session_generate`. Start from `rwkv_generate_options_default`.
#[repr(C)]
pub struct RwkvGenerateOptions {
    /// The most tokens to generate (default 200).
    pub max_tokens: u32,
    /// Always take the most likely token (default true); the sampling fields below apply when false.
    pub greedy: bool,
    pub temperature: f32,
    pub top_p: f32,
    /// 0 keeps every token.
    pub top_k: u32,
    /// The random seed, used when `use_seed` is true (otherwise the OS provides one).
    pub seed: u64,
    pub use_seed: bool,
    /// `stop_count` strings; the generation ends before the first one it writes.
    pub stop: *const *const c_char,
    pub stop_count: usize,
}

/// Called with each generated token and its text (UTF-8, `length` bytes, NUL-terminated);
/// return 0 to go on, anything else to stop.
pub type RwkvTokenCallback = Option<
    unsafe extern "C" fn(user_data: *mut c_void, token: u32, text: *const c_char, length: usize) -> i32,
>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(message: String) {
    let message = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|last| *last.borrow_mut() = message);
}

/// Runs `body`, turning an error or a panic into `failed` and the thread's last error.
fn guard<T>(failed: T, body: impl FnOnce() -> Result<T, String>) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => value,
        Ok(Err(message)) => {
            set_error(message);
            failed
        }
        Err(panic) => {
            let reason = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            set_error(format!("internal error (a panic was caught at the C boundary): {reason}"));
            failed
        }
    }
}

fn text<'a>(pointer: *const c_char, what: &str) -> Result<&'a str, String> {
    if pointer.is_null() {
        return Err(format!("{what} is NULL"));
    }
    // SAFETY: the caller passes a NUL-terminated string (the header's contract).
    unsafe { CStr::from_ptr(pointer) }.to_str().map_err(|_| format!("{what} is not UTF-8"))
}

fn optional(pointer: *const c_char, what: &str) -> Result<Option<String>, String> {
    if pointer.is_null() {
        return Ok(None);
    }
    text(pointer, what).map(|s| Some(s.to_string()))
}

fn reference<'a, T>(pointer: *const T, what: &str) -> Result<&'a T, String> {
    // SAFETY: a non-NULL handle is one this library returned and the caller has not freed.
    unsafe { pointer.as_ref() }.ok_or_else(|| format!("{what} is NULL"))
}

fn mutable<'a, T>(pointer: *mut T, what: &str) -> Result<&'a mut T, String> {
    // SAFETY: as `reference`, and used by one thread at a time (the header's contract).
    unsafe { pointer.as_mut() }.ok_or_else(|| format!("{what} is NULL"))
}

/// A slice from a pointer and a length; NULL is allowed for an empty one.
fn slice<'a, T>(pointer: *const T, length: usize, what: &str) -> Result<&'a [T], String> {
    if length == 0 {
        return Ok(&[]);
    }
    if pointer.is_null() {
        return Err(format!("{what} is NULL"));
    }
    // SAFETY: the caller passes `length` readable elements.
    Ok(unsafe { std::slice::from_raw_parts(pointer, length) })
}

/// Copies `bytes` to `buffer` if they fit in `capacity`; always writes the length needed.
fn write_out(bytes: &[u8], buffer: *mut u8, capacity: usize, length: *mut usize) -> Result<i32, String> {
    if !length.is_null() {
        // SAFETY: `length` points to a writable size_t.
        unsafe { *length = bytes.len() };
    }
    if bytes.len() > capacity {
        return Ok(RWKV_BUFFER_TOO_SMALL);
    }
    if !bytes.is_empty() {
        if buffer.is_null() {
            return Err("the output buffer is NULL".into());
        }
        // SAFETY: `buffer` holds `capacity` ≥ `bytes.len()` writable bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buffer, bytes.len()) };
    }
    Ok(RWKV_OK)
}

/// Drops a handle this library returned (NULL is ignored); a panic in a destructor stays here.
unsafe fn free_handle<T>(handle: *mut T) {
    if !handle.is_null() {
        // SAFETY: a handle this library made with Box::into_raw, freed once (the caller's contract).
        guard((), || {
            drop(unsafe { Box::from_raw(handle) });
            Ok(())
        });
    }
}

/// The last error on this thread, as UTF-8; valid until the next call on this thread. Never NULL.
#[no_mangle]
pub extern "C" fn rwkv_last_error() -> *const c_char {
    LAST_ERROR.with(|last| last.borrow().as_ptr())
}

/// Fills `options` with the defaults.
#[no_mangle]
pub unsafe extern "C" fn rwkv_options_default(options: *mut RwkvOptions) {
    if let Some(options) = unsafe { options.as_mut() } {
        *options = RwkvOptions {
            quant: std::ptr::null(),
            backend: std::ptr::null(),
            adapter: std::ptr::null(),
            tokenizer: std::ptr::null(),
            slots: 4,
        };
    }
}

/// Fills `options` with the defaults: greedy, 200 tokens, no stop strings.
#[no_mangle]
pub unsafe extern "C" fn rwkv_generate_options_default(options: *mut RwkvGenerateOptions) {
    if let Some(options) = unsafe { options.as_mut() } {
        let sampler = SamplerOptions::default();
        *options = RwkvGenerateOptions {
            max_tokens: 200,
            greedy: true,
            temperature: sampler.temperature,
            top_p: sampler.top_p,
            top_k: 0,
            seed: 0,
            use_seed: false,
            stop: std::ptr::null(),
            stop_count: 0,
        };
    }
}

fn model_options(options: *const RwkvOptions) -> Result<TextModelOptions, String> {
    let mut out = TextModelOptions::default();
    // SAFETY: NULL or a valid RwkvOptions.
    if let Some(options) = unsafe { options.as_ref() } {
        out.quant = optional(options.quant, "options.quant")?;
        out.backend = optional(options.backend, "options.backend")?;
        out.adapter = optional(options.adapter, "options.adapter")?;
        out.tokenizer = optional(options.tokenizer, "options.tokenizer")?.map(PathBuf::from);
        out.slots = (options.slots as usize).max(1);
    }
    Ok(out)
}

fn boxed(model: TextModel) -> *mut RwkvModel {
    Box::into_raw(Box::new(RwkvModel { inner: model }))
}

/// Loads a model file (.safetensors, .pth, .gguf) or Hugging Face folder. `options` may be NULL.
/// Returns NULL on failure.
#[no_mangle]
pub unsafe extern "C" fn rwkv_model_load(path: *const c_char, options: *const RwkvOptions) -> *mut RwkvModel {
    guard(std::ptr::null_mut(), || {
        let path = text(path, "path")?;
        let model = TextModel::open(path.as_ref(), &model_options(options)?).map_err(|e| e.to_string())?;
        Ok(boxed(model))
    })
}

/// Loads a model file held in memory (`length` bytes, copied). Returns NULL on failure.
#[no_mangle]
pub unsafe extern "C" fn rwkv_model_load_bytes(
    bytes: *const u8,
    length: usize,
    options: *const RwkvOptions,
) -> *mut RwkvModel {
    guard(std::ptr::null_mut(), || {
        let bytes = slice(bytes, length, "bytes")?.to_vec();
        let model = TextModel::from_bytes("model bytes", bytes, &model_options(options)?)
            .map_err(|e| e.to_string())?;
        Ok(boxed(model))
    })
}

/// Frees a model. Its sessions must be freed first. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn rwkv_model_free(model: *mut RwkvModel) {
    unsafe { free_handle(model) }
}

/// The number of token ids the model accepts (0 if `model` is NULL).
#[no_mangle]
pub unsafe extern "C" fn rwkv_model_vocab_size(model: *const RwkvModel) -> u32 {
    guard(0, || Ok(reference(model, "model")?.inner.engine.model().config.vocab as u32))
}

/// Encodes `text` (NUL-terminated UTF-8) into `tokens` (room for `capacity`); writes the count to
/// `count`. Returns RWKV_BUFFER_TOO_SMALL, with the count needed, if they do not fit.
#[no_mangle]
pub unsafe extern "C" fn rwkv_tokenize(
    model: *const RwkvModel,
    text_in: *const c_char,
    tokens: *mut u32,
    capacity: usize,
    count: *mut usize,
) -> i32 {
    guard(RWKV_ERROR, || {
        let model = reference(model, "model")?;
        let ids = model.inner.tokenizer.encode(text(text_in, "text")?).map_err(|e| e.to_string())?;
        let status =
            write_out(bytemuck_bytes(&ids), tokens.cast(), capacity.saturating_mul(4), std::ptr::null_mut())?;
        if !count.is_null() {
            // SAFETY: `count` points to a writable size_t.
            unsafe { *count = ids.len() };
        }
        Ok(status)
    })
}

fn bytemuck_bytes(ids: &[u32]) -> &[u8] {
    // SAFETY: u32 has no padding; the byte view covers exactly the slice.
    unsafe { std::slice::from_raw_parts(ids.as_ptr().cast(), std::mem::size_of_val(ids)) }
}

/// Decodes `count` tokens into `text_out` as NUL-terminated UTF-8 (invalid sequences become
/// U+FFFD); writes the length without the NUL to `length`. Returns RWKV_BUFFER_TOO_SMALL if the
/// text and its NUL do not fit in `capacity` bytes.
#[no_mangle]
pub unsafe extern "C" fn rwkv_detokenize(
    model: *const RwkvModel,
    tokens: *const u32,
    count: usize,
    text_out: *mut c_char,
    capacity: usize,
    length: *mut usize,
) -> i32 {
    guard(RWKV_ERROR, || {
        let model = reference(model, "model")?;
        let decoded =
            model.inner.tokenizer.decode(slice(tokens, count, "tokens")?).map_err(|e| e.to_string())?;
        let mut bytes = decoded.into_bytes();
        bytes.push(0);
        let status = write_out(&bytes, text_out.cast(), capacity, length)?;
        if !length.is_null() {
            // SAFETY: as in write_out; the NUL is not counted.
            unsafe { *length -= 1 };
        }
        Ok(status)
    })
}

/// A new session in the initial state, or NULL when every slot of the model is in use.
#[no_mangle]
pub unsafe extern "C" fn rwkv_session_new(model: *const RwkvModel) -> *mut RwkvSession {
    guard(std::ptr::null_mut(), || {
        let owner = reference(model, "model")?;
        let session = Session::new(&owner.inner.engine).map_err(|e| e.to_string())?;
        Ok(Box::into_raw(Box::new(RwkvSession { session, model })))
    })
}

/// Frees a session and its slot. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn rwkv_session_free(session: *mut RwkvSession) {
    unsafe { free_handle(session) }
}

/// Returns the session to the initial state.
#[no_mangle]
pub unsafe extern "C" fn rwkv_session_reset(session: *mut RwkvSession) -> i32 {
    guard(RWKV_ERROR, || {
        mutable(session, "session")?.session.reset().map_err(|e| e.to_string())?;
        Ok(RWKV_OK)
    })
}

/// Reads `count` tokens. If `logits` is not NULL, writes the vocabulary-size logits that predict
/// the next token there. Token ids beyond the vocabulary are an error.
#[no_mangle]
pub unsafe extern "C" fn rwkv_session_feed(
    session: *mut RwkvSession,
    tokens: *const u32,
    count: usize,
    logits: *mut f32,
) -> i32 {
    guard(RWKV_ERROR, || {
        let session = &mut mutable(session, "session")?.session;
        let tokens = slice(tokens, count, "tokens")?;
        if tokens.is_empty() {
            return Err("no tokens to feed".into());
        }
        if logits.is_null() {
            session.advance(tokens).map_err(|e| e.to_string())?;
            return Ok(RWKV_OK);
        }
        let values = session.feed(tokens).map_err(|e| e.to_string())?;
        // SAFETY: `logits` holds room for the vocabulary size, as the header says.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), logits, values.len()) };
        Ok(RWKV_OK)
    })
}

fn generate_options(
    options: *const RwkvGenerateOptions,
    cancel: *const RwkvCancel,
) -> Result<GenerateOptions, String> {
    let mut out = GenerateOptions::default();
    // SAFETY: NULL or a valid RwkvGenerateOptions.
    if let Some(options) = unsafe { options.as_ref() } {
        out.max_tokens = options.max_tokens as usize;
        out.sampler = SamplerOptions {
            greedy: options.greedy,
            temperature: options.temperature,
            top_p: options.top_p,
            top_k: options.top_k as usize,
            seed: options.use_seed.then_some(options.seed),
            ..SamplerOptions::default()
        };
        out.stop = slice(options.stop, options.stop_count, "options.stop")?
            .iter()
            .map(|&s| text(s, "a stop string").map(str::to_string))
            .collect::<Result<_, _>>()?;
    }
    // SAFETY: NULL or a flag this library returned.
    if let Some(cancel) = unsafe { cancel.as_ref() } {
        out.cancel = cancel.token.clone();
    }
    Ok(out)
}

/// Reads `prompt` and generates, calling `callback` (which may be NULL) with each token. Returns
/// RWKV_OK when the generation ended by itself (length, stop string, end of text), RWKV_CANCELLED
/// when `cancel` was set or the callback asked to stop. `options` and `cancel` may be NULL.
#[no_mangle]
pub unsafe extern "C" fn rwkv_session_generate(
    session: *mut RwkvSession,
    prompt: *const c_char,
    options: *const RwkvGenerateOptions,
    callback: RwkvTokenCallback,
    user_data: *mut c_void,
    cancel: *const RwkvCancel,
) -> i32 {
    guard(RWKV_ERROR, || {
        let handle = mutable(session, "session")?;
        let model = reference(handle.model, "the session's model")?;
        let options = generate_options(options, cancel)?;
        let prompt = text(prompt, "prompt")?;
        let finish = handle
            .session
            .generate_with(&model.inner.tokenizer, prompt, &options, |piece| {
                let Some(callback) = callback else { return ControlFlow::Continue(()) };
                let text = CString::new(piece.text.replace('\0', "")).unwrap_or_default();
                // SAFETY: the caller's callback, with a NUL-terminated string alive for the call.
                let stop = unsafe { callback(user_data, piece.token, text.as_ptr(), text.as_bytes().len()) };
                if stop == 0 {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(())
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(if finish == Finish::Cancelled { RWKV_CANCELLED } else { RWKV_OK })
    })
}

/// The session's state as bytes (the library's state file format) in `buffer`; writes the length
/// to `length`. Returns RWKV_BUFFER_TOO_SMALL, with the length needed, if it does not fit.
#[no_mangle]
pub unsafe extern "C" fn rwkv_session_save_state(
    session: *const RwkvSession,
    buffer: *mut u8,
    capacity: usize,
    length: *mut usize,
) -> i32 {
    guard(RWKV_ERROR, || {
        let session = &reference(session, "session")?.session;
        let bytes = session.state().and_then(|state| state.to_bytes()).map_err(|e| e.to_string())?;
        write_out(&bytes, buffer, capacity, length)
    })
}

/// Replaces the session's state with one saved by `rwkv_session_save_state` from a model of the
/// same shape.
#[no_mangle]
pub unsafe extern "C" fn rwkv_session_load_state(
    session: *mut RwkvSession,
    bytes: *const u8,
    length: usize,
) -> i32 {
    guard(RWKV_ERROR, || {
        let session = &mut mutable(session, "session")?.session;
        let state =
            State::from_bytes("state bytes", slice(bytes, length, "bytes")?).map_err(|e| e.to_string())?;
        session.set_state(&state).map_err(|e| e.to_string())?;
        Ok(RWKV_OK)
    })
}

/// A new cancel flag, unset.
#[no_mangle]
pub extern "C" fn rwkv_cancel_new() -> *mut RwkvCancel {
    Box::into_raw(Box::new(RwkvCancel { token: CancelToken::default() }))
}

/// Sets the flag: a generation using it stops before its next token. Safe from any thread.
#[no_mangle]
pub unsafe extern "C" fn rwkv_cancel_set(cancel: *const RwkvCancel) {
    // SAFETY: NULL or a flag this library returned.
    if let Some(cancel) = unsafe { cancel.as_ref() } {
        cancel.token.cancel();
    }
}

/// Frees a cancel flag. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn rwkv_cancel_free(cancel: *mut RwkvCancel) {
    unsafe { free_handle(cancel) }
}
