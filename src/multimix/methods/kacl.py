"""KACL: a classifier whose image embedding must agree with the radiomics of where it looks.

Each step, for the labeled and the unlabeled (weak-view) images of the batch:

1. the class activation map of the current model (``models.heads.classifier_cam``, from the
   same forward pass: for this global-pool + linear head it is Grad-CAM without the ReLU, as
   the gradient of a class score with respect to the last feature map is the linear weight) of
   the predicted class (multi-class) or the most likely finding (multi-label), detached,
   upsampled to the image, scaled to [0, 1] per image and thresholded into a region mask;
2. the radiomic features of that region on the weak view (``models.radiomics``: first order,
   GLCM and shape with PyRadiomics' definitions, 16 grey-level bins), signed-log scaled;
3. a radiomics encoder (MLP) and two projection heads (``setup``: trained, checkpointed) map
   the features and the pooled last feature map to embeddings, and NT-Xent pulls each image's
   two embeddings together against the rest of the batch.

The total is ``cls`` x the task's supervised loss on labeled images + ``pseudo`` x the task's
FixMatch pseudo-labels on unlabeled ones (as ``encssl``) + ``contrastive`` x NT-Xent (+ the
multi-label task's zone loss when the model has a localization head). With ``every`` = N > 1
the regions and features are recomputed only on every N-th step; between, an image seen at a
recompute step reuses its stored features (weak views differ by flips and small shifts, to
which these features are nearly blind) and only images never seen are computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from multimix.core.batch import LABELED, UNLABELED, Batch, Stream
from multimix.core.errors import ConfigError
from multimix.methods.base import Method, Regions, register
from multimix.methods.losses import nt_xent
from multimix.models.heads import classifier_cam
from multimix.models.radiomics import FEATURES, feature_matrix, radiomic_features

GREY_SCALE = 255.0  # images are [0, 1]; radiomics see 8-bit grey values as PyRadiomics would


@dataclass
class KACLOptions:
    cls: float = field(default=1.0, metadata={"flag": "w-cls", "help": "Classification loss."})
    pseudo: float = field(default=0.25, metadata={"flag": "w-pseudo", "help": "Pseudo-labels."})
    contrastive: float = field(
        default=0.5, metadata={"flag": "w-contrastive", "help": "NT-Xent image/radiomics."}
    )
    threshold: float = field(default=0.7, metadata={"help": "Pseudo-label confidence threshold."})
    temperature: float = field(default=0.2, metadata={"help": "NT-Xent temperature."})
    cam_threshold: float = field(
        default=0.5, metadata={"help": "Share of the CAM's range kept as the region."}
    )
    every: int = field(default=1, metadata={"help": "Recompute CAM regions every N steps."})
    bins: int = field(default=16, metadata={"help": "Grey-level bins of the radiomics."})
    embed: int = field(default=64, metadata={"help": "Embedding size of the projections."})

    def validate(self) -> None:
        if min(self.cls, self.pseudo, self.contrastive) < 0:
            raise ConfigError("loss weights must be >= 0")
        if not 0.0 <= self.threshold <= 1.0 or not 0.0 <= self.cam_threshold < 1.0:
            raise ConfigError("method.threshold must lie in [0, 1], cam_threshold in [0, 1)")
        if self.temperature <= 0 or self.every < 1 or self.bins < 2 or self.embed < 1:
            raise ConfigError("need temperature > 0, every >= 1, bins >= 2, embed >= 1")


def signed_log(x: torch.Tensor) -> torch.Tensor:
    """Compress features spanning 1e-3 .. 1e7 (energy, area) to a range an MLP can take."""
    return torch.sign(x) * torch.log1p(x.abs())


class RadiomicsHeads(nn.Module):
    """Radiomics encoder (standardise, MLP) and the two projection heads."""

    def __init__(self, n_features: int, image_channels: int, embed: int) -> None:
        super().__init__()
        hidden = max(2 * embed, 64)
        self.radiomics = nn.Sequential(
            nn.BatchNorm1d(n_features),
            nn.Linear(n_features, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
        )
        self.project_radiomics = nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, embed)
        )
        self.project_image = nn.Sequential(
            nn.Linear(image_channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, embed)
        )

    def forward(
        self, pooled: torch.Tensor, features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.project_image(pooled), self.project_radiomics(self.radiomics(features))


def cam_regions(
    classifier: nn.Module,
    feats: list[torch.Tensor],
    size: tuple[int, int],
    threshold: float,
) -> torch.Tensor:
    """(B, H, W) bool: where each image's CAM of its top class (or finding) is above
    ``threshold`` of its range (the box-from-map rule of ``metrics.localization``, batched)."""
    with torch.no_grad():
        last = [feats[-1].detach()]
        cam = classifier_cam(classifier, last)  # (B, C, h, w)
        scores = cam.mean((-2, -1))  # the classifier's logits (before dropout)
        top = scores.argmax(1)
        chosen = cam[torch.arange(cam.shape[0], device=cam.device), top][:, None]
        up = F.interpolate(chosen.float(), size=size, mode="bilinear", align_corners=False)[:, 0]
        lo = up.amin((-2, -1), keepdim=True)
        hi = up.amax((-2, -1), keepdim=True)
        scaled = (up - lo) / (hi - lo).clamp_min(1e-12)
        return scaled >= threshold


@register
class KACL(Method):
    """Classifier + pseudo-labels + NT-Xent between each image and its CAM region's radiomics."""

    name = "kacl"
    description = "classifier + pseudo-labels + contrast with radiomics of the CAM region"
    tasks = ("multiclass", "multilabel")
    Options = KACLOptions

    def __init__(self, options=None, task=None) -> None:
        super().__init__(options, task)
        self.cache: dict[int, torch.Tensor] = {}  # (stream, row) key -> radiomic features

    @property
    def streams(self) -> dict[str, Stream]:
        return {
            UNLABELED: Stream(UNLABELED, ("weak", "strong"), size="unlabeled"),
            LABELED: Stream(LABELED, targets=True),  # last: it draws the task's maps
        }

    def setup(self, model: nn.Module) -> nn.Module:
        channels = model.encoder.channels[-1]
        self.modules = RadiomicsHeads(len(FEATURES), channels, self.options.embed)
        return self.modules

    def _keys(self, batch: Batch) -> torch.Tensor:
        """One integer per contrasted image: labeled rows even, unlabeled rows odd."""
        return torch.cat([batch[LABELED].rows * 2, batch[UNLABELED].rows * 2 + 1]).cpu()

    def radiomics(
        self, model: nn.Module, feats: list[torch.Tensor], images: torch.Tensor, keys, step: int
    ) -> tuple[torch.Tensor, float]:
        """Features of each image's CAM region; stored per image when every > 1."""
        o = self.options
        recompute = step % o.every == 0
        todo = [i for i, k in enumerate(keys.tolist()) if recompute or k not in self.cache]
        out = torch.empty(len(keys), len(FEATURES), device=images.device)
        if todo:
            rows = torch.tensor(todo, device=images.device)
            region = cam_regions(
                model.classifier,
                [f[rows] for f in feats[-1:]],
                images.shape[-2:],
                o.cam_threshold,
            )
            fresh = feature_matrix(images[rows, 0] * GREY_SCALE, region, bin_count=o.bins)
            out[rows] = fresh
            if o.every > 1:
                for i, f in zip(todo, fresh.cpu(), strict=True):
                    self.cache[int(keys[i])] = f
        for i, k in enumerate(keys.tolist()):
            if i not in todo:
                out[i] = self.cache[k].to(images.device)
        return out, len(todo) / max(len(keys), 1)

    def loss(
        self, model: nn.Module, batch: Batch, step: int = 0
    ) -> tuple[torch.Tensor, dict[str, float]]:
        o, task = self.options, self.task
        labeled, unlabeled = batch[LABELED], batch[UNLABELED]
        n_cls, n_u = len(labeled), len(unlabeled)
        x = torch.cat([labeled["weak"].x, unlabeled["weak"].x, unlabeled["strong"].x])
        feats = model.encode(x)  # one pass for every view, as in FixMatch
        logits = model.classify(feats)
        ce, logs = task.supervised_loss(logits[:n_cls], labeled.targets)
        weak, strong = logits[n_cls : n_cls + n_u], logits[n_cls + n_u :]
        pseudo, keep = task.pseudo_label_loss(weak, strong, o.threshold)
        n = n_cls + n_u  # the weak views: labeled, then unlabeled
        weak_feats = [f[:n] for f in feats]
        rad, fresh = self.radiomics(model, weak_feats, x[:n], self._keys(batch), step)
        pooled = weak_feats[-1].mean((-2, -1))
        z_image, z_radiomics = self.modules(pooled, signed_log(rad))
        contrast = nt_xent(z_image, z_radiomics, o.temperature)
        total = o.cls * ce + o.pseudo * pseudo + o.contrastive * contrast
        cls_feats = [f[:n_cls] for f in feats]
        loc = task.localization_loss(model, cls_feats, labeled["weak"].extras)
        if loc is not None:
            total = total + task.options.w_loc * loc
            logs["loss_loc"] = loc.item()
        logs |= {
            "loss_pseudo": pseudo.item(),
            "pseudo_kept": keep.float().mean().item(),
            "loss_contrastive": contrast.item(),
            "regions_computed": fresh,
            "loss": total.item(),
        }
        return total, logs

    def regions(self, model: nn.Module, x: torch.Tensor) -> Regions:
        """The CAM region each image is contrasted on and its radiomic features: what the
        image embedding was pulled towards, so a reader can check where and what it is."""
        o = self.options
        with torch.no_grad():
            feats = model.encode(x)
        masks = cam_regions(model.classifier, feats[-1:], x.shape[-2:], o.cam_threshold)
        found = radiomic_features(x[:, 0].float() * GREY_SCALE, masks, bin_count=o.bins)
        values = [{k: float(found[k][i]) for k in FEATURES} for i in range(len(x))]
        caption = (
            f"CAM region: where the class activation map of the top class is at or above "
            f"{o.cam_threshold:g} of its range; radiomics of the image there ({o.bins} grey "
            f"levels, grey values 0-255)"
        )
        return Regions("cam_region", caption, masks.cpu(), values)

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.cache:
            keys = sorted(self.cache)
            state["cache_keys"] = torch.tensor(keys, dtype=torch.long)
            state["cache_features"] = torch.stack([self.cache[k] for k in keys])
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.cache = {}
        if "cache_keys" in state:
            for k, f in zip(state["cache_keys"].tolist(), state["cache_features"], strict=True):
                self.cache[int(k)] = f.clone()
