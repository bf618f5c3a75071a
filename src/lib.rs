//! hubbub
