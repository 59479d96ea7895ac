//! The op families of the suite. Each is a function over a [`Ctx`]; `suite!` makes one test
//! per family.

// Case tables read better as `&[input.clone()]` than as `std::slice::from_ref(&input)`.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod elementwise;
mod grads;
mod known;
mod structure;

use crate::harness::Ctx;

/// A named family of cases.
pub type Family = (&'static str, fn(&mut Ctx));

/// Every family, in the order `suite!` lists them.
pub const FAMILIES: [Family; 13] = [
    ("known_values", known::known_values),
    ("unary", elementwise::unary),
    ("binary", elementwise::binary),
    ("scalar", elementwise::scalar),
    ("where_cond", elementwise::where_cond),
    ("cast", elementwise::cast),
    ("reduce", structure::reduce),
    ("composite", structure::composite),
    ("matmul", structure::matmul),
    ("views", structure::views),
    ("indexing", structure::indexing),
    ("creation", structure::creation),
    ("grads", grads::grads),
];
