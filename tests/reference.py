"""Float references the C operator and reader are checked against (tests and bench/).

No rounding anywhere: float IDCT of the dequantized coefficients, upsampling and
crop/resize with the dense matrices of jpegfreq.geometry.axis_matrix, float block DCT.
"""
import numpy as np

import jpegfreq
from jpegfreq.geometry import axis_matrix, block_idct, dct_matrix


def reconstruct_rgb(data):
    """Float decode from coefficients: block IDCT, fancy upsampling (identity resize), JFIF RGB."""
    r = jpegfreq.read_coefficients(data)
    h = r.header
    planes = []
    for i, c in enumerate(h.components):
        x = block_idct(r.dequantized(i))[:c.height, :c.width]
        m_h = axis_matrix(h.height, c.height, h.max_v_samp // c.v_samp, 0, h.height, h.height)
        m_w = axis_matrix(h.width, c.width, h.max_h_samp // c.h_samp, 0, h.width, h.width)
        planes.append(m_h @ x @ m_w.T + 128.0)
    if len(planes) == 1:
        return np.clip(planes[0], 0, 255)[..., None]
    y, cb, cr = planes[0], planes[1] - 128.0, planes[2] - 128.0
    rgb = np.stack([y + 1.402 * cr, y - 0.344136286 * cb - 0.714136286 * cr, y + 1.772 * cb], -1)
    return np.clip(rgb, 0, 255)


def float_reference(data, geometry, cs):
    """decode -> upsample -> crop/resize -> flip -> block DCT, all in float64, no rounding."""
    r = jpegfreq.read_coefficients(data)
    h = r.header
    box = geometry.box_for(h.width, h.height)
    oh, ow = geometry.out_h, geometry.out_w
    out = np.zeros((cs.count, oh // 8, ow // 8))
    comp_of, ks = np.asarray(cs.component_of), np.asarray(cs.k)
    c8 = dct_matrix()
    for c in range(min(3, h.num_components)):
        idx = np.nonzero(comp_of == c)[0]
        if len(idx) == 0:
            continue
        comp = h.components[c]
        x = block_idct(r.dequantized(c))[:comp.height, :comp.width]
        m_h = axis_matrix(h.height, comp.height, h.max_v_samp // comp.v_samp, box[1], box[3], oh)
        m_w = axis_matrix(h.width, comp.width, h.max_h_samp // comp.h_samp, box[0], box[2], ow,
                          flip=geometry.flip)
        blocks = (m_h @ x @ m_w.T).reshape(oh // 8, 8, ow // 8, 8)
        spectrum = np.einsum("ux,ixjy,vy->uvij", c8, blocks, c8, optimize=True)
        out[idx] = spectrum[ks[idx] >> 3, ks[idx] & 7]
    return out


def pooled_rel_rms(pairs, cs):
    """Per-component pooled relative RMS of [(got, ref)] cubes; nan for a component with no energy."""
    comp = np.asarray(cs.component_of)
    num, den = np.zeros(3), np.zeros(3)
    for got, ref in pairs:
        for c in range(3):
            d = (got[comp == c] - ref[comp == c]).astype(np.float64)
            r = ref[comp == c].astype(np.float64)
            num[c] += np.sum(d * d)
            den[c] += np.sum(r * r)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(num / den)
