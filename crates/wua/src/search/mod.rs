//! `IUpdateSearcher` support (`nf-wuapi-iupdatesearcher-search`, DIGEST §5.3).
//!
//! [`criteria`] parses, prints and evaluates the search-criteria language that
//! `IUpdateSearcher::Search` takes. It is self-contained: sessions do not use it yet.

pub mod criteria;
