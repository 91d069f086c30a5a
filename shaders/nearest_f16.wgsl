// Prelude: rounding f32 to the nearest f16 by its bits. WGSL lets a conversion to f16 pick either
// neighbour of a value between two f16s; rounding first, the conversion is exact, and every
// driver multiplies the same inputs wherever f16's normal range holds them.

// v rounded to 11 significant bits, ties to even: exactly an f16 wherever f16's normal range
// holds it. (Below that range the conversion rounds again, to f16's subnormal steps.)
fn nearest_f16(v: vec4<f32>) -> vec4<f32> {
    let bits = bitcast<vec4<u32>>(v);
    let rounded = bits + vec4<u32>(0xfffu) + ((bits >> vec4<u32>(13u)) & vec4<u32>(1u));
    // Infinities and NaNs stay as they are (rounding would carry a NaN's bits into the sign).
    let special = (bits & vec4<u32>(0x7f800000u)) == vec4<u32>(0x7f800000u);
    return bitcast<vec4<f32>>(select(rounded & vec4<u32>(0xffffe000u), bits, special));
}
