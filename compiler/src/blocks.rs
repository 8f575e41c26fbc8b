//! Weights kept as their GGUF blocks in the graph ([`mimic_models::quant`]): a projection is
//! ONNX Runtime's `com.microsoft.MatMulNBits` over the blocks, the embedding a gather of
//! quantised rows, so that a decode step reads 4 or 8 bits a weight instead of 32 and computes
//! exactly the dequantised weights the trainer trains on.
//!
//! ```text
//! y = x W^T,  W[n, 32 b + j] = (q[n, b, j] - zp) * d[n, b]       MatMulNBits(x, q, d)
//!   Q4_1 (zp = 0):  + sum_j x[32 b + j] * m[n, b]     ReduceSum over each block, MatMul by m^T
//! embed(ids) = (q8[ids] - 128) * d[ids]       (Q8_0 rows: Gather, Cast, Sub, Mul)
//! ```
//!
//! 8-bit blocks (Q8_0) are two 4-bit products: ONNX Runtime 1.30's CPU `MatMulNBits` at full
//! float accuracy runs 8 bits on a path about 30 times slower than a float32 MatMul
//! (measured for SmolLM2's 49,152 x 576 output head: 70 ms against 2.1 ms), and its fast
//! 8-bit path quantises the activations too (not exact). With `q + 128 = 16 h + l`,
//! `d q = 16 d (h - 8) + d l`: both halves exact 4-bit weights, 0.58 ms each there
//! ([`mimic_models::quant::BlockWeight::q8_nibbles`]).
//!
//! LoRA heads on a projection kept as blocks stay a separate low-rank product,
//! `y += (x A^T) (B^T alpha / r)` (merging them would need the blocks re-quantised): the
//! trainer's own decomposition. Fused MimIC's widened q/k/v and its `o_proj` adding `mu`, and
//! every weight of a float16 graph, stay float32, as before.
use mimic_models::quant::{BlockKind, BlockWeight, BLOCK};

use crate::emit::OnnxBackend;
use crate::graph::attr_int;
use crate::onnx::tensor_proto::DataType;

/// The domain of ONNX Runtime's contrib operators.
pub const MS_DOMAIN: &str = "com.microsoft";

/// `x A^T B^T alpha / r`, the LoRA update of `module` (`{module}.weight` kept as blocks), when
/// the folded heads adapt it.
pub(crate) fn lora_delta(b: &mut OnnxBackend, x: &str, module: &str) -> Option<String> {
    let crate::fold::HeadsSource::Folded(h) = b.heads else {
        return None;
    };
    let lora = h.lora.as_ref()?;
    let a = h.tensors.get(&format!("lora.{module}.A"))?;
    let bt = h.tensors.get(&format!("lora.{module}.B"))?;
    let scale = (lora.alpha / lora.rank as f64) as f32;
    let (a_name, b_name) = (format!("lora.{module}.A.T"), format!("lora.{module}.B.T"));
    if b.emitted_blocks.insert(format!("lora.{module}")) {
        let at = a.transpose2();
        let mut bs = bt.transpose2();
        bs.data.iter_mut().for_each(|v| *v *= scale);
        for r in [
            b.g.weight(&a_name, &at.shape, &at.data),
            b.g.weight(&b_name, &bs.shape, &bs.data),
        ] {
            if let Err(e) = r {
                b.error.get_or_insert(e);
            }
        }
    }
    let low = b.g.node("MatMul", &[x, &a_name], vec![]);
    Some(b.g.node("MatMul", &[&low, &b_name], vec![]))
}

/// The weights a graph keeps as blocks (its `*.blocks` and `*.high` initializers), with their
/// block type.
pub fn kept(
    graph: &crate::onnx::GraphProto,
    weights: &mimic_models::Weights,
) -> Vec<(String, BlockKind)> {
    let mut out: Vec<(String, BlockKind)> = graph
        .initializer
        .iter()
        .filter_map(|t| {
            let n = t.name.as_deref()?;
            n.strip_suffix(".blocks")
                .or_else(|| n.strip_suffix(".high"))
        })
        .flat_map(|names| names.split('+'))
        .filter_map(|n| Some((n.to_string(), weights.blocks.get(n)?.kind)))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.dedup();
    out
}

/// The blocks of the weights `names` (HF names, `[out, in]` each), stacked by rows, when the
/// graph keeps blocks and each one has them (and none is rewritten by the heads).
fn blocks_of(b: &OnnxBackend, names: &[&str]) -> Option<BlockWeight> {
    if !b.keep_blocks {
        return None;
    }
    let parts = names
        .iter()
        .map(|n| b.weights.blocks.get(*n))
        .collect::<Option<Vec<_>>>()?;
    BlockWeight::stack(&parts)
}

/// The `MatMulNBits` initializers of `names`' blocks (written once): B, scales and zero
/// points, and the attributes.
fn initializers(
    b: &mut OnnxBackend,
    names: &[&str],
    w: &BlockWeight,
) -> (Vec<String>, Vec<crate::onnx::AttributeProto>) {
    let base = names.join("+");
    let q = format!("{base}.blocks");
    if b.emitted_blocks.insert(base.clone()) {
        let per_block = BLOCK * w.kind.bits() / 8;
        let nb = w.blocks_per_row();
        let put = |b: &mut OnnxBackend, r: crate::Result<String>| {
            if let Err(e) = r {
                b.error.get_or_insert(e);
            }
        };
        let r =
            b.g.weight_bytes(&q, DataType::Uint8, &[w.rows, nb, per_block], &w.packed());
        put(b, r);
        let r =
            b.g.weight(&format!("{base}.scales"), &[w.rows * nb], &w.scales());
        put(b, r);
        if let Some(zp) = w.zero_points() {
            let name = format!("{base}.zero_points");
            let r = b.g.weight_bytes(&name, DataType::Uint8, &[zp.len()], &zp);
            put(b, r);
        }
        if let Some(m) = w.minimums() {
            // [rows, blocks] -> [blocks, rows] for the MatMul.
            let t = mimic_models::HostTensor::new(vec![w.rows, nb], m).transpose2();
            let r = b.g.weight(&format!("{base}.minimums.T"), &t.shape, &t.data);
            put(b, r);
        }
    }
    let mut inputs = vec![q, format!("{base}.scales")];
    if w.zero_points().is_some() {
        inputs.push(format!("{base}.zero_points"));
    }
    let attrs = vec![
        attr_int("K", w.cols as i64),
        attr_int("N", w.rows as i64),
        attr_int("bits", w.kind.bits() as i64),
        attr_int("block_size", BLOCK as i64),
    ];
    (inputs, attrs)
}

/// `x W^T` for the stacked weights `names` as one `MatMulNBits` node (output named `out`, or a
/// fresh name); `None` when they are not all kept as 4-bit blocks.
pub(crate) fn matmul(
    b: &mut OnnxBackend,
    x: &str,
    names: &[&str],
    out: Option<&str>,
) -> Option<String> {
    let w = blocks_of(b, names)?;
    if w.kind == BlockKind::Q8_0 {
        return Some(matmul_q8(b, x, names, &w, out));
    }
    let (weights, attrs) = initializers(b, names, &w);
    let mut inputs = vec![x];
    inputs.extend(weights.iter().map(String::as_str));
    let out = match out {
        Some(o) => o.to_string(),
        None => b.g.fresh("matmulnbits"),
    };
    let Some(_) = w.minimums() else {
        b.g.node_in_domain(MS_DOMAIN, "MatMulNBits", &inputs, &[&out], attrs);
        return Some(out);
    };
    // Q4_1: each block's minimum times the sum of its inputs.
    let y = b.g.fresh("matmulnbits");
    b.g.node_in_domain(MS_DOMAIN, "MatMulNBits", &inputs, &[&y], attrs);
    let g = &mut b.g;
    let shape = g.const_i64(&[0, 0, w.blocks_per_row() as i64, BLOCK as i64]);
    let blocks = g.node("Reshape", &[x, &shape], vec![]);
    let last = g.const_i64(&[-1]);
    let sums = g.node(
        "ReduceSum",
        &[&blocks, &last],
        vec![attr_int("keepdims", 0)],
    );
    let mins = format!("{}.minimums.T", names.join("+"));
    let offsets = g.node("MatMul", &[&sums, &mins], vec![]);
    g.node_named("Add", &[&y, &offsets], &[&out], vec![]);
    Some(out)
}

/// `x W^T` for Q8_0 blocks as the sum of their two 4-bit halves.
fn matmul_q8(
    b: &mut OnnxBackend,
    x: &str,
    names: &[&str],
    w: &BlockWeight,
    out: Option<&str>,
) -> String {
    let (hi, lo) = w.q8_nibbles().expect("Q8_0 blocks");
    let base = names.join("+");
    let nb = w.blocks_per_row();
    let d = w.scales();
    let (hi_name, lo_name) = (format!("{base}.high"), format!("{base}.low"));
    if b.emitted_blocks.insert(format!("{base}.nibbles")) {
        let d16: Vec<f32> = d.iter().map(|&s| 16.0 * s).collect();
        let zeros = vec![0u8; w.rows * nb.div_ceil(2)];
        let dims = [w.rows, nb, BLOCK / 2];
        let results = [
            b.g.weight_bytes(&hi_name, DataType::Uint8, &dims, &hi),
            b.g.weight(&format!("{hi_name}.scales"), &[d16.len()], &d16),
            b.g.weight_bytes(&lo_name, DataType::Uint8, &dims, &lo),
            b.g.weight(&format!("{lo_name}.scales"), &[d.len()], &d),
            b.g.weight_bytes(
                &format!("{lo_name}.zero_points"),
                DataType::Uint8,
                &[zeros.len()],
                &zeros,
            ),
        ];
        for r in results {
            if let Err(e) = r {
                b.error.get_or_insert(e);
            }
        }
    }
    let attrs = || {
        vec![
            attr_int("K", w.cols as i64),
            attr_int("N", w.rows as i64),
            attr_int("bits", 4),
            attr_int("block_size", BLOCK as i64),
        ]
    };
    let (h_scales, l_scales, l_zp) = (
        format!("{hi_name}.scales"),
        format!("{lo_name}.scales"),
        format!("{lo_name}.zero_points"),
    );
    let y_hi = b.g.fresh("matmulnbits");
    b.g.node_in_domain(
        MS_DOMAIN,
        "MatMulNBits",
        &[x, &hi_name, &h_scales],
        &[&y_hi],
        attrs(),
    );
    let y_lo = b.g.fresh("matmulnbits");
    b.g.node_in_domain(
        MS_DOMAIN,
        "MatMulNBits",
        &[x, &lo_name, &l_scales, &l_zp],
        &[&y_lo],
        attrs(),
    );
    let out = match out {
        Some(o) => o.to_string(),
        None => b.g.fresh("add"),
    };
    b.g.node_named("Add", &[&y_hi, &y_lo], &[&out], vec![]);
    out
}

/// The rows of a Q8_0 embedding table for `ids` (`[batch, seq]` -> `[batch, seq, hidden]`),
/// dequantised in the graph; `None` for a table not kept as Q8_0 blocks.
pub(crate) fn embed(b: &mut OnnxBackend, ids: &str, table: &str) -> Option<String> {
    let w = blocks_of(b, &[table]).filter(|w| w.kind == BlockKind::Q8_0)?;
    let (weights, _) = initializers(b, &[table], &w);
    let g = &mut b.g;
    let axis = || attr_int("axis", 0);
    let q = g.node("Gather", &[&weights[0], ids], vec![axis()]); // [b, s, nb, 32] u8
    let q = g.node("Cast", &[&q], vec![attr_int("to", DataType::Float as i64)]);
    let zero = g.scalar_f32(128.0);
    let q = g.node("Sub", &[&q, &zero], vec![]);
    let shape = g.const_i64(&[w.rows as i64, w.blocks_per_row() as i64, 1]);
    let scales = g.node("Reshape", &[&weights[1], &shape], vec![]);
    let d = g.node("Gather", &[&scales, ids], vec![axis()]); // [b, s, nb, 1]
    let y = g.node("Mul", &[&q, &d], vec![]);
    let flat = g.const_i64(&[0, 0, w.cols as i64]);
    Some(g.node("Reshape", &[&y, &flat], vec![]))
}
