//! Money and tokens. Amounts are whole micro-dollars (`i64`, 1 = $0.000001)
//! so reservations add and subtract exactly; a price in USD per million
//! tokens is exactly micro-dollars per token.

use serde::{Deserialize, Serialize};

use crate::registry::Price;

/// Micro-dollars in one dollar.
pub const MICROS_PER_USD: i64 = 1_000_000;

/// USD → micro-dollars, rounded down (a cap never grows by rounding).
pub fn usd_to_micros(usd: f64) -> i64 {
    (usd * MICROS_PER_USD as f64).floor() as i64
}

/// Micro-dollars → USD.
pub fn micros_to_usd(micros: i64) -> f64 {
    micros as f64 / MICROS_PER_USD as f64
}

/// What `input` and `output` tokens cost at `price`, rounded up (a
/// reservation never falls short by rounding).
pub fn cost_micros(price: Price, input: u64, output: u64) -> i64 {
    (input as f64 * price.input + output as f64 * price.output).ceil() as i64
}

/// An upper bound of the tokens a prompt of `bytes` UTF-8 bytes in
/// `messages` messages takes: no tokenizer in use makes a token of less
/// than one byte, and each message adds a few tokens of framing.
pub fn input_tokens_bound(bytes: usize, messages: usize) -> u64 {
    (bytes + 8 * messages + 8) as u64
}

/// The tokens reserved for one image (or other non-text) part of a
/// prompt: above what the major providers charge for one image at their
/// highest detail.
pub const IMAGE_TOKENS_BOUND: u64 = 6_000;

/// An estimate (not a bound) of the tokens in `text`, for output whose
/// usage the provider never sent: about four characters a token.
pub fn estimate_tokens(text: &str) -> u64 {
    let chars = text.chars().count() as u64;
    chars.div_ceil(4)
}

/// Tokens used by one call, and whether they were estimated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    /// Counted by the router, not reported by the provider (a cut stream,
    /// a client that left, a provider that sends no usage).
    pub estimated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_per_million_tokens_are_micros_per_token_rounded_up() {
        let p = Price { input: 0.15, output: 0.6 };
        assert_eq!(cost_micros(p, 1_000_000, 0), 150_000);
        assert_eq!(cost_micros(p, 1, 1), 1);
        assert_eq!(cost_micros(Price { input: 0.0, output: 0.0 }, 10, 10), 0);
        assert_eq!(usd_to_micros(5.0), 5_000_000);
        assert_eq!(usd_to_micros(0.0000019), 1);
    }

    #[test]
    fn the_input_bound_is_at_least_the_bytes() {
        assert!(input_tokens_bound("héllo wörld".len(), 1) >= "héllo wörld".len() as u64);
        assert_eq!(estimate_tokens("abcdefgh"), 2);
        assert_eq!(estimate_tokens(""), 0);
    }
}
