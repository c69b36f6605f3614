//! folio-http's API tests: the whole HTTP stack (routing, parsing, auth, error mapping)
//! over a `Bookstore` wired from folio-memory's in-memory fakes.

mod accounts;
mod admin;
mod analytics;
mod catalog;
mod commerce;
mod demo;
mod events;
mod feedback;
mod openapi;
mod ops;
mod safety;
mod support;
