"""Every training hyperparameter, named and defaulted as Ultralytics' train arguments.

    python -m yolojax.train --config=configs/default.py --config.data=coco128 --config.epochs=100

The keys are flat, exactly Ultralytics' names; yolojax-only keys are at the end. ``--config.key=value``
overrides any of them; an unknown key fails naming the closest valid one.
"""
from __future__ import annotations

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # --- what to train -------------------------------------------------------------------------------
    c.task = "detect"  # detect or classify (a classification model, e.g. yolov8n-cls.yaml, trains as classify)
    c.mode = "train"  # mode name (train)
    c.model = "yolov8n.yaml"  # *.yaml to build from scratch, or *.pt / *.npz weights to start from
    c.data = "shapes"  # dataset YAML, a bundled name (coco128, coco, VOC, shapes) or tfds:NAME
    c.epochs = 100  # number of epochs
    c.time = ml_collections.FieldReference(None, field_type=float)  # max training hours: after each epoch the run is re-planned to ceil(time*3600 / mean epoch time) epochs (lr schedule, close_mosaic follow) and it stops when time is up
    c.patience = 100  # early-stopping patience in epochs without fitness improvement; 0 disables
    c.batch = 16  # total (global) batch size over all devices; -1: AutoBatch for 60% of the accelerator memory, 0<batch<1: that fraction (per-device batch x devices; CPU: 16)
    c.imgsz = 640  # square train/val image size, a multiple of 32 (rounded up otherwise); None: the task's default (640 detect, 224 classify)
    c.save = True  # save checkpoints
    c.save_period = -1  # also keep a checkpoint every N epochs if > 0
    c.cache = ml_collections.FieldReference(False, field_type=object)  # cache decoded images: True/'ram' in memory, 'disk' as <image stem>.npy beside each image (reused by later runs)
    c.device = ml_collections.FieldReference(None, field_type=str)  # None: first GPU else CPU; 0, '0,1', cpu, mps, tpu, all
    c.workers = 8  # data-loading worker processes (0: in the main process)
    c.project = ml_collections.FieldReference(None, field_type=str)  # output root (default runs/detect)
    c.name = ml_collections.FieldReference(None, field_type=str)  # run name (default train, train2, ...)
    c.exist_ok = False  # reuse an existing run directory instead of incrementing the name
    c.pretrained = ml_collections.FieldReference(True, field_type=object)  # bool, or a .pt/.npz path whose matching tensors are transferred
    c.optimizer = "auto"  # SGD, MuSGD, Adam, Adamax, AdamW, NAdam, RAdam, RMSProp or auto (current: MuSGD on long runs)
    c.verbose = True  # print per-class validation tables
    c.seed = 0  # random seed (data order, augmentation, init)
    c.deterministic = True  # XLA's deterministic GPU ops (--xla_gpu_deterministic_ops); XLA:CPU is deterministic
    c.single_cls = False  # train as a single-class detector
    c.classes = ml_collections.FieldReference(None, field_type=object)  # class ids to keep (train and val labels)
    c.rect = False  # rectangular training batches: aspect-ratio order, no shuffling, no mosaic/mixup; at most 2*imgsz/32-1 batch shapes (one compile each)
    c.cos_lr = False  # cosine learning-rate schedule instead of linear
    c.close_mosaic = 10  # disable mosaic for the last N epochs (0: never)
    c.resume = ml_collections.FieldReference(False, field_type=object)  # True (latest checkpoint in the run dir) or a path to a run dir / checkpoint
    c.amp = True  # mixed precision: bfloat16 compute on accelerators (float32 on CPU)
    c.fraction = 1.0  # fraction of the training images to use
    c.profile = False  # print the per-phase time table (data, step, validation, checkpoint, ...) after each epoch
    c.freeze = ml_collections.FieldReference(None, field_type=object)  # int N (layers 0..N-1) or list of layer indices
    c.multi_scale = False  # resize each batch (on the device) to a long side drawn in [0.5, 1.5]*imgsz as Ultralytics, rounded to one of 5 sizes: at most 5 compiled image shapes
    c.val = True  # validate every epoch (the final epoch is always validated)
    c.split = "val"  # dataset split used for validation
    c.save_json = False  # write COCO-format predictions.json during final validation
    c.conf = ml_collections.FieldReference(None, field_type=float)  # confidence threshold (0.001 for val)
    c.iou = 0.7  # NMS IoU threshold
    c.max_det = 300  # maximum detections per image
    c.half = False  # (val/predict FP16 option; no effect on training, warned: precision comes from amp and dtype)
    c.plots = True  # save plots and sample images
    # --- optimisation ---------------------------------------------------------------------------------
    c.lr0 = 0.01  # initial learning rate (ignored by optimizer=auto)
    c.lrf = 0.01  # final learning rate = lr0 * lrf
    c.momentum = 0.937  # SGD/MuSGD/RMSProp momentum (warmed up) / Adam-family beta1 (fixed); ignored by optimizer=auto
    c.weight_decay = 0.0005  # weight decay, scaled by batch * accumulate / nbs
    c.warmup_epochs = 3.0  # warmup length in epochs (at least 100 iterations, v8)
    c.warmup_momentum = 0.8  # momentum at the start of warmup
    c.warmup_bias_lr = 0.1  # learning rate of the bias group at the start of warmup
    c.box = 7.5  # box (CIoU) loss gain
    c.cls = 0.5  # classification (BCE) loss gain
    c.dfl = 1.5  # distribution focal loss gain
    c.label_smoothing = 0.0  # (v8 key; the detection loss never reads it: warned when set)
    c.nbs = 64  # nominal batch size: gradients are accumulated to it
    # --- augmentation ---------------------------------------------------------------------------------
    c.hsv_h = 0.015  # hue gain
    c.hsv_s = 0.7  # saturation gain
    c.hsv_v = 0.4  # value gain
    c.degrees = 0.0  # rotation (+/- degrees)
    c.translate = 0.1  # translation (+/- fraction)
    c.scale = 0.5  # scale gain
    c.shear = 0.0  # shear (+/- degrees)
    c.perspective = 0.0  # perspective (+/- fraction)
    c.flipud = 0.0  # vertical flip probability
    c.fliplr = 0.5  # horizontal flip probability
    c.bgr = 0.0  # probability of feeding BGR instead of RGB
    c.mosaic = 1.0  # mosaic probability
    c.mixup = 0.0  # mixup probability
    c.copy_paste = 0.0  # copy-paste probability (segments only: no effect on box datasets, warned when set)
    # --- classification only (task=classify; detection warns when they are changed) ---------------------
    c.dropout = 0.0  # dropout rate before the Classify head's linear layer
    c.auto_augment = ml_collections.FieldReference("randaugment", field_type=str)  # train policy: randaugment, autoaugment, augmix or None (then colour jitter from hsv_*)
    c.erasing = 0.4  # random-erasing probability of a training image
    c.crop_fraction = 1.0  # validation/predict: resize the short side to imgsz / crop_fraction, then centre-crop imgsz
    c.cfg = ml_collections.FieldReference(None, field_type=str)  # YAML file whose keys override these defaults
    # --- yolojax only ---------------------------------------------------------------------------------
    c.compat = "v8"  # 'v8' (Ultralytics 8.2.103, default) or 'current' (8.4) semantics where they differ
    c.dtype = "auto"  # compute dtype: auto (bfloat16 with amp on GPU/TPU, float32 on CPU), float32, bfloat16
    c.hsv_on_device = "auto"  # HSV jitter in the train step (auto: on GPU/TPU; the same pixels, less loader CPU)
    c.warp_on_device = "auto"  # mosaic, warp and flips in the train step (auto: on GPU/TPU, if no mixup/perspective)
    c.bn_sync = True  # BatchNorm statistics over the global batch (False: per device, as Ultralytics DDP)
    c.checkpoint_every = 0  # also checkpoint every N steps inside an epoch (0: only at epoch ends)
    c.keep_checkpoints = 2  # Orbax checkpoints kept besides best
    c.tensorboard = True  # write TensorBoard event files into the run directory
    c.log_every = 10  # read metrics back from the device every N steps (asynchronous otherwise)
    c.coordinator_address = ml_collections.FieldReference(None, field_type=str)  # multi-host: host:port of process 0
    c.num_processes = ml_collections.FieldReference(None, field_type=int)  # multi-host: number of processes
    c.process_id = ml_collections.FieldReference(None, field_type=int)  # multi-host: this process's id
    c.dist_init_timeout = 300  # multi-host: seconds to wait for every process to join
    c.dist_heartbeat_timeout = 100  # multi-host: seconds without heartbeats before a peer is declared dead
    return c
