"""COCO evaluation: pycocotools' COCOeval of result dicts, quietly, as a dict of metrics.

    coco = load_coco("instances_val2017.json")
    evaluate_coco(coco, results, "segm")       # {"AP": ..., "AP50": ..., ..., "ARl": ...}

The results are what jpegfreq.detection.CocoJpeg.to_coco returns (source pixels).
"""
import contextlib
import io
import os

__all__ = ["COCO_METRICS", "evaluate_coco", "load_coco"]

#: The twelve numbers of COCOeval.summarize(), in its order.
COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def load_coco(ann):
    """A pycocotools COCO of an annotation json path (its index print silenced); a COCO is
    returned as it is."""
    from pycocotools.coco import COCO
    if isinstance(ann, COCO):
        return ann
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(os.fspath(ann))


def evaluate_coco(coco_gt, results, iou_type="bbox", image_ids=None, summary_out=None) -> dict:
    """COCOeval of result dicts against a ground truth; returns {"AP", "AP50", ..., "ARl"}.

    coco_gt: pycocotools COCO. results: list of COCO result dicts (CocoJpeg.to_coco).
    iou_type: "bbox" or "segm". image_ids (default all of coco_gt): images evaluated (images
    without detections count as misses). summary_out: a list that receives COCOeval's
    printed table as one string. No results at all gives zeros.
    """
    from pycocotools.cocoeval import COCOeval
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    if not results:
        if summary_out is not None:
            summary_out.append(f"{iou_type}: no detections")
        return {k: 0.0 for k in COCO_METRICS}
    if iou_type == "segm" and any("segmentation" not in r for r in results):
        raise ValueError("segm evaluation needs results with 'segmentation' (a mask model)")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        dt = coco_gt.loadRes([dict(r) for r in results])
        ev = COCOeval(coco_gt, dt, iou_type)
        ev.params.imgIds = sorted(coco_gt.getImgIds() if image_ids is None else image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    if summary_out is not None:
        summary_out.append(buf.getvalue())
    return {k: float(max(v, 0.0)) for k, v in zip(COCO_METRICS, ev.stats)}
