//! The operator's binding to ONNX Runtime: its inputs and attributes as
//! [`mimic_models::kernel_op`] names them, the shapes checked, the outputs allocated and the
//! (batch, head) tasks handed to the session's threads.
use mimic_models::kernel_op::{ATTENTION, FORM, HEADS_INPUTS, INPUTS, OUTPUTS};
use ort::operator::{
    ComputeContext, Kernel, KernelContext, Operator, OperatorInput, OperatorOutput,
};
use ort::value::TensorElementType;

use super::math::{append_cache, attend_head, Call, Dims, SharedOut, Slot};

/// The operator's descriptor.
pub struct MimicAttention;

/// One node's attributes.
pub struct AttentionKernel {
    scale: f32,
    heads: usize,
    kv_heads: usize,
    convex: bool,
}

impl Operator for MimicAttention {
    type Kernel<'a> = AttentionKernel;

    fn name(&self) -> &str {
        ATTENTION
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        let f = TensorElementType::Float32;
        let required = (0..INPUTS).map(move |_| OperatorInput::required(f));
        required.chain((0..HEADS_INPUTS).map(move |_| OperatorInput::optional(f)))
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        let f = TensorElementType::Float32;
        (0..OUTPUTS).map(move |_| OperatorOutput::required(f))
    }

    fn create_kernel<'a>(&self, info: &KernelContext<'a>) -> ort::Result<AttentionKernel> {
        let int = |name: &str| {
            info.get::<i64>(name)
                .filter(|&v| v > 0)
                .ok_or_else(|| ort::Error::new(format!("{ATTENTION}: attribute {name} missing")))
        };
        let (heads, kv_heads) = (int("q_num_heads")? as usize, int("kv_num_heads")? as usize);
        if heads % kv_heads != 0 {
            return Err(ort::Error::new(format!(
                "{ATTENTION}: {heads} query heads do not group over {kv_heads} KV heads"
            )));
        }
        Ok(AttentionKernel {
            scale: info
                .get::<f32>("scale")
                .ok_or_else(|| ort::Error::new(format!("{ATTENTION}: attribute scale missing")))?,
            heads,
            kv_heads,
            convex: info.get::<i64>(FORM).unwrap_or(0) == 1,
        })
    }
}

fn fail(msg: String) -> ort::Error {
    ort::Error::new(format!("{ATTENTION}: {msg}"))
}

impl Kernel for AttentionKernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let input = |i: usize| {
            ctx.input(i)?
                .ok_or_else(|| fail(format!("input {i} missing")))
        };
        let (q, k, v, mask, past_k, past_v) = (
            input(0)?,
            input(1)?,
            input(2)?,
            input(3)?,
            input(4)?,
            input(5)?,
        );
        let (q_shape, q) = q.try_extract_tensor::<f32>()?;
        let (k_shape, k) = k.try_extract_tensor::<f32>()?;
        let (_, v) = v.try_extract_tensor::<f32>()?;
        let (mask_shape, mask) = mask.try_extract_tensor::<f32>()?;
        let (past_shape, past_k) = past_k.try_extract_tensor::<f32>()?;
        let (_, past_v) = past_v.try_extract_tensor::<f32>()?;
        let (heads, kv_heads) = (self.heads, self.kv_heads);
        if q_shape.len() != 3 || past_shape.len() != 4 || mask_shape.len() != 4 {
            return Err(fail(format!(
                "expects 3-D queries, a 4-D mask and 4-D past keys, got {q_shape:?}, {mask_shape:?}, {past_shape:?}"
            )));
        }
        let head_dim = q_shape[2] as usize / heads;
        let mut dims = Dims {
            batch: q_shape[0] as usize,
            seq: q_shape[1] as usize,
            past: past_shape[2] as usize,
            heads,
            kv_heads,
            head_dim,
            mask_batch: mask_shape[0] as usize,
            heads_rows: 1,
        };
        let t = dims.total();
        let kv_width = kv_heads * head_dim;
        let expect_kv = [dims.batch as i64, dims.seq as i64, kv_width as i64];
        let expect_past = [
            dims.batch as i64,
            kv_heads as i64,
            dims.past as i64,
            head_dim as i64,
        ];
        if q_shape[2] as usize != heads * head_dim
            || k_shape[..] != expect_kv
            || v.len() != k.len()
            || past_shape[..] != expect_past
            || past_v.len() != past_k.len()
            || !(mask_shape[0] == 1 || mask_shape[0] == dims.batch as i64)
            || mask_shape[1] != 1
            || mask_shape[2] != dims.seq as i64
            || mask_shape[3] != t as i64
        {
            return Err(fail(format!(
                "shapes do not agree: queries {q_shape:?}, keys {k_shape:?}, mask {mask_shape:?}, past {past_shape:?}"
            )));
        }
        // The MimIC heads' inputs come after the `Attention` operator's.
        let heads_input = |i: usize| ctx.input(INPUTS + i);
        let (w, b, u) = (heads_input(0)?, heads_input(1)?, heads_input(2)?);
        let slot = match (&w, &b, &u) {
            (Some(w), Some(b), Some(u)) => {
                let (w_shape, w) = w.try_extract_tensor::<f32>()?;
                let (_, b) = b.try_extract_tensor::<f32>()?;
                let (_, u) = u.try_extract_tensor::<f32>()?;
                let rows = if w_shape.len() == 3 {
                    w_shape[0] as usize
                } else {
                    1
                };
                dims.heads_rows = rows;
                if !(rows == 1 || rows == dims.batch)
                    || w.len() != rows * heads * head_dim
                    || u.len() != w.len()
                    || b.len() != rows * heads
                {
                    return Err(fail(format!(
                        "MimIC heads shaped {w_shape:?} do not fit {heads} heads of {head_dim} for batch {}",
                        dims.batch
                    )));
                }
                Some(Slot {
                    w,
                    b,
                    u,
                    convex: self.convex,
                })
            }
            (None, None, None) => None,
            _ => return Err(fail("MimIC heads need all of w, b and u".into())),
        };
        let present_shape = [dims.batch, kv_heads, t, head_dim].map(|x| x as i64);
        let mut present_k = ctx
            .output(1, present_shape.to_vec())?
            .ok_or_else(|| fail("present key output missing".into()))?;
        let mut present_v = ctx
            .output(2, present_shape.to_vec())?
            .ok_or_else(|| fail("present value output missing".into()))?;
        let (_, present_k) = present_k.try_extract_tensor_mut::<f32>()?;
        let (_, present_v) = present_v.try_extract_tensor_mut::<f32>()?;
        append_cache(&dims, past_k, k, present_k);
        append_cache(&dims, past_v, v, present_v);
        let mut y = ctx
            .output(0, q_shape.to_vec())?
            .ok_or_else(|| fail("output missing".into()))?;
        let (_, y) = y.try_extract_tensor_mut::<f32>()?;
        let call = Call {
            d: dims,
            scale: self.scale,
            q,
            keys: present_k,
            values: present_v,
            mask,
            slot,
            out: SharedOut(y.as_mut_ptr(), y.len()),
        };
        // Each task writes the rows of one (batch, head) pair only.
        let work = |task: usize| attend_head(&call, task);
        let tasks = dims.batch * heads;
        // Below a few thousand key rows a call is cheaper on one thread than handed out.
        if tasks * dims.seq * t < 4096 {
            (0..tasks).for_each(work);
        } else {
            ctx.par_for(tasks, tasks, work)?;
        }
        Ok(())
    }
}
