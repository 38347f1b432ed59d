//! The boundary between Python and honeytrace's engine, as two attributes.
//!
//! `#[honeytrace_macros::methods]` replaces `#[pymethods]` on an `impl` block, and
//! `#[honeytrace_macros::function]` replaces `#[pyfunction]`. Each wraps the body of every
//! Python-visible function in `crate::py::boundary::guard`, which runs it under the
//! panic shield: a panic is counted, logged and turned into the function's degraded
//! result (the `Degrade` trait, or the expression of a `#[fallback(expr)]` attribute on
//! the function), so no `PanicException` ever reaches Python.
//!
//! `__traverse__` and `__clear__` are left as they are: the garbage collector calls them
//! with the interpreter in a state where nothing may be logged.
//!
//! A test (`tests/test_boundary.py`) fails when a `#[pymethods]` or `#[pyfunction]`
//! appears anywhere else in the engine's sources.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::{quote, ToTokens};
use syn::{parse_macro_input, Attribute, Block, Expr, ImplItem, ItemFn, ItemImpl};

const UNGUARDED: &[&str] = &["__traverse__", "__clear__"];

/// Take `#[fallback(expr)]` out of `attrs`.
fn take_fallback(attrs: &mut Vec<Attribute>) -> syn::Result<Option<Expr>> {
    let mut found = None;
    let mut err = None;
    attrs.retain(|a| {
        if a.path().is_ident("fallback") {
            match a.parse_args::<Expr>() {
                Ok(e) => found = Some(e),
                Err(e) => err = Some(e),
            }
            false
        } else {
            true
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(found),
    }
}

fn guarded(what: &Tokens, fallback: Option<Expr>, block: &Block) -> Block {
    let fallback = match fallback {
        Some(e) => quote! { || #e },
        None => quote! { crate::py::boundary::Degrade::degraded },
    };
    let body = quote! {
        {
            crate::py::boundary::guard(#what, #fallback, move || #block)
        }
    };
    syn::parse2(body).expect("a block")
}

/// `#[pymethods]` with every method under the panic shield.
#[proc_macro_attribute]
pub fn methods(_args: TokenStream, input: TokenStream) -> TokenStream {
    let mut item = parse_macro_input!(input as ItemImpl);
    let ty = item.self_ty.to_token_stream().to_string().replace(' ', "");
    for it in &mut item.items {
        let ImplItem::Fn(f) = it else { continue };
        let name = f.sig.ident.to_string();
        if UNGUARDED.contains(&name.as_str()) {
            continue;
        }
        let fallback = match take_fallback(&mut f.attrs) {
            Ok(fb) => fb,
            Err(e) => return e.to_compile_error().into(),
        };
        let what = format!("{ty}.{name}");
        f.block = guarded(&quote! { #what }, fallback, &f.block);
    }
    quote! {
        #[::pyo3::pymethods]
        #item
    }
    .into()
}

/// `#[pyfunction]` with its body under the panic shield.
#[proc_macro_attribute]
pub fn function(_args: TokenStream, input: TokenStream) -> TokenStream {
    let mut f = parse_macro_input!(input as ItemFn);
    let fallback = match take_fallback(&mut f.attrs) {
        Ok(fb) => fb,
        Err(e) => return e.to_compile_error().into(),
    };
    let what = f.sig.ident.to_string();
    *f.block = guarded(&quote! { #what }, fallback, &f.block);
    quote! {
        #[::pyo3::pyfunction]
        #f
    }
    .into()
}
