//! Payload masking (RFC 6455 §5.3): XOR with a 4-byte key, resumable at any
//! offset so a frame can be unmasked piece by piece as it arrives.

/// Unmasks (or masks) `buf` in place; `offset` is the position of `buf[0]`
/// within the frame payload, so the key lines up when resuming.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut key = [0u8; 8];
    for (i, k) in key.iter_mut().enumerate() {
        *k = mask[(i + offset) & 3];
    }
    let wide = u64::from_ne_bytes(key);
    let mut words = buf.chunks_exact_mut(8);
    for word in &mut words {
        // chunks_exact_mut yields exactly 8 bytes: the conversion cannot fail.
        let value = u64::from_ne_bytes((&*word).try_into().unwrap()) ^ wide;
        word.copy_from_slice(&value.to_ne_bytes());
    }
    for (byte, k) in words.into_remainder().iter_mut().zip(key) {
        *byte ^= k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(buf: &mut [u8], mask: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= mask[(i + offset) & 3];
        }
    }

    #[test]
    fn matches_the_bytewise_definition_at_every_offset_and_length() {
        let mask = [0x6d, 0xb6, 0xb2, 0x80];
        let data: Vec<u8> = (0..67u8).collect();
        for len in 0..data.len() {
            for offset in 0..8 {
                let mut fast = data[..len].to_vec();
                let mut slow = fast.clone();
                apply_mask(&mut fast, mask, offset);
                naive(&mut slow, mask, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn unmasking_in_pieces_equals_unmasking_at_once() {
        let mask = [1, 2, 3, 4];
        let mut whole: Vec<u8> = (0..100u8).collect();
        let mut pieces = whole.clone();
        apply_mask(&mut whole, mask, 0);
        apply_mask(&mut pieces[..13], mask, 0);
        apply_mask(&mut pieces[13..50], mask, 13);
        apply_mask(&mut pieces[50..], mask, 50);
        assert_eq!(whole, pieces);
    }
}
