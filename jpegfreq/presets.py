"""The command-line defaults of train.py and detect.py, and of their demos: data, not code.

Each preset is a table of flag defaults keyed by argparse destination; a flag given on the
command line always wins (jpegfreq.runtime.apply_preset fills only what is still None).  A
demo preset is applied before its script's preset, so it only lists what it changes.  Two
entries are not flags: "synthetic" sizes the labelled set a demo writes (and makes the script
write it), "inspect_one" has train.py inspect one validation image at the end.

Kept as a Python module of literals rather than a json file so that it ships inside the
package with no package-data configuration and can say why a number is what it is.
"""

PRESETS = {
    # train.py with --data; the learning rate defaults to 0.1 x global batch / 256
    "train": {
        "source": "jpeg-coeffs", "arch": "resnet50", "epochs": 90, "output_dir": "out", "lr_schedule": "step",
        "lr_warmup_epochs": 0,
    },
    # train.py with no --data (make demo): a few CPU minutes on two cores (docs/train.md)
    "train-demo": {
        "arch": "resnet18", "epochs": 8, "output_dir": "demo-out", "lr": 0.02,
        "lr_schedule": "cosine", "lr_warmup_epochs": 1,
        "synthetic": {"classes": 6, "train_per_class": 60, "val_per_class": 20},
        # at the end, show what the reader sees in one validation image (jpegfreq.inspect)
        "inspect_one": True,
    },
    # detect.py with --data (COCO); the learning rate defaults to 0.02 x total batch / 16
    "detect": {
        "task": "segm", "epochs": 12, "batch_size": 2, "min_size": 800, "max_size": 1333,
        "lr_steps": [8, 11], "warmup_iters": 1000, "box_batch_size_per_image": 512,
        "rpn_post_nms_top_n": 2000, "detections_per_img": 100, "output_dir": "runs/detect",
        "eval_before": False, "clip_grad": 0.0, "threads": 0,
    },
    # detect.py with no --data: Mask R-CNN-DCT from scratch on synthetic shapes, AP after
    # every epoch (docs/detection.md)
    "detect-demo": {
        "batch_size": 4, "min_size": 160, "max_size": 200, "lr": 0.02,
        "lr_steps": [10], "warmup_iters": 20, "box_batch_size_per_image": 128,
        "rpn_post_nms_top_n": 300, "detections_per_img": 50, "output_dir": "runs/detect_demo",
        "eval_before": True, "clip_grad": 10.0,
        # sized for a shared 2-core CPU, where 2 OpenMP threads run several times slower than 1
        "threads": 1,
        "synthetic": {"train": 60, "val": 20, "size": [256, 256], "size_jitter": 0.15},
    },
}
