"""The project's joint method: pixel pseudo-masks, CutMix, guarded class pseudo-labels, EMA."""

from __future__ import annotations

import pytest
import torch

from multimix.config import TrainConfig
from multimix.core.batch import LABELED, MASKED, UNLABELED, Batch, Draw, View
from multimix.core.errors import ConfigError
from multimix.engine.checkpoint import load_state, load_weights
from multimix.engine.trainer import train
from multimix.methods.base import get_method
from multimix.methods.joint import (
    STRONG,
    ClassGuard,
    cutmix_boxes,
    mix,
    pixel_pseudo_loss,
)
from multimix.models.net import ModelConfig, MultiMixNet
from tests.resume_helpers import assert_same_weights, stop_then_resume


def test_pixel_pseudo_masks_honour_the_per_pixel_threshold():
    probs = torch.tensor([[[[0.95, 0.05], [0.6, 0.3]]]])
    logits = torch.zeros_like(probs, requires_grad=True)
    loss, keep = pixel_pseudo_loss(logits, probs, threshold=0.9)
    assert keep.tolist() == [[[[True, True], [False, False]]]]
    loss.backward()
    grad = logits.grad[0, 0]
    # Kept pixels pull towards their hard label; the unsure ones get no gradient at all.
    assert grad[0, 0] < 0 and grad[0, 1] > 0
    assert grad[1, 0] == 0 and grad[1, 1] == 0
    _, keep_low = pixel_pseudo_loss(logits, probs, threshold=0.65)
    assert keep_low[0, 0, 1, 1] and not keep_low[0, 0, 1, 0]  # max(0.3, 0.7) >= 0.65


def test_cutmix_moves_masks_with_images():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 1, 32, 32, generator=g)
    masks = (images > 0.5).float()  # a mask that is a function of its image, pixel by pixel
    box, source = cutmix_boxes(6, (32, 32), 1.0, g)
    mixed_images, mixed_masks = mix(images, box, source), mix(masks, box, source)
    assert torch.equal(mixed_masks, (mixed_images > 0.5).float())
    area = box.float().mean(dim=(1, 2, 3))
    assert ((area > 0.03) & (area < 0.3)).all()  # 5-25% of the image, up to rounding
    assert torch.equal(source, torch.tensor([1, 2, 3, 4, 5, 0]))  # never its own image
    none, _ = cutmix_boxes(6, (32, 32), 0.0, g)
    assert not none.any()


def test_cutmix_from_masked_pastes_masked_images_with_their_true_masks(monkeypatch):
    """``cutmix_from=masked``: unlabeled strong view i gets a box of masked image i (its strong
    view, as the masked stream is drawn), and inside the box the pixel target is that image's
    true mask, kept whatever the confidence threshold."""
    import multimix.methods.joint as joint

    seen = {}
    real_pass, real_loss = joint.joint_pass, joint.pixel_pseudo_loss

    def recording_pass(model, x, n_dec):
        seen["x"] = x.detach().clone()
        return real_pass(model, x, n_dec)

    def recording_loss(logits, target, threshold, sure=None):
        seen["target"], seen["sure"] = target.clone(), sure
        return real_loss(logits, target, threshold, sure)

    monkeypatch.setattr(joint, "joint_pass", recording_pass)
    monkeypatch.setattr(joint, "pixel_pseudo_loss", recording_loss)
    method = get_method("multimix", {"cutmix_from": "masked", "cutmix": 1.0})
    net = MultiMixNet(ModelConfig(widths=(4, 8, 8, 16, 16), bridge=True))
    batch = _batch()
    method.loss(net, batch, step=5)
    gen = torch.Generator().manual_seed(5 * 1_000_003 + 17)
    box, _ = cutmix_boxes(2, (32, 32), 1.0, gen)
    assert box.any(dim=(1, 2, 3)).all()
    masked = batch[MASKED]["strong"]
    strong = batch[UNLABELED][STRONG].x
    # Rows: 2 masked, 2 weak, 2 strong, 2 labeled class images.
    assert torch.equal(seen["x"][4:6], torch.where(box, masked.x, strong))
    inside = box.expand_as(seen["target"])
    assert torch.equal(seen["target"][inside], masked.masks[inside])
    assert torch.equal(seen["sure"], inside)
    # Sure pixels count even where the target is as unsure as it gets; the others do not.
    unsure = torch.full_like(seen["target"], 0.5)
    _, keep = real_loss(torch.zeros_like(unsure), unsure, 0.9, seen["sure"])
    assert torch.equal(keep, inside)
    with pytest.raises(ConfigError, match="--cutmix-from"):
        get_method("multimix", {"cutmix_from": "elsewhere"})
    with pytest.raises(ConfigError, match="--unlabeled-size 0"):
        get_method("multimix", {"cutmix_from": "masked", "unlabeled_size": 64})


def test_distribution_alignment_keeps_a_shifted_domain_from_one_class():
    """Every unlabeled image leans to class 1 (a domain shift); with a balanced labeled prior,
    alignment brings class 0 back among the pseudo-labels, where the fixed threshold keeps
    only class 1."""
    g = torch.Generator().manual_seed(1)
    logits = torch.stack([torch.randn(64, generator=g), torch.randn(64, generator=g) + 1.5], 1)
    fixed = ClassGuard("fixed", 2, 0.6, momentum=0.0)
    aligned = ClassGuard("da", 2, 0.6, momentum=0.0)
    aligned.update_prior(torch.tensor([0, 1] * 8))
    labels_fixed, keep_fixed = fixed.targets(logits)
    labels_da, keep_da = aligned.targets(logits)
    share_fixed = (labels_fixed[keep_fixed] == 0).float().mean()
    share_da = (labels_da[keep_da] == 0).float().mean()
    assert share_fixed < 0.15 and share_da > 0.3, (share_fixed, share_da)


def test_freematch_thresholds_are_lower_for_the_rarer_class():
    guard = ClassGuard("freematch", 2, 0.7, momentum=0.0)
    logits = torch.tensor([[0.0, 3.0]] * 7 + [[1.0, 0.0]])
    labels, keep = guard.targets(logits)
    # The running mean favours class 1; class 0's threshold is scaled down, so its only,
    # less confident, image (0.73) is kept too.
    assert keep.all() and labels.tolist() == [1] * 7 + [0]


def test_guard_rows_leave_the_other_images_unlabeled_and_out_of_the_statistics():
    """Rows outside ``rows`` never get a pseudo-label and do not move the running mean."""
    logits = torch.tensor([[0.0, 4.0]] * 3 + [[4.0, 0.0]])
    rows = torch.tensor([False, False, False, True])
    guard = ClassGuard("fixed", 2, 0.6, momentum=0.0)
    labels, keep = guard.targets(logits, rows)
    assert keep.tolist() == [False, False, False, True] and labels[3] == 0
    assert guard.mean_probs[0] > 0.9  # the mean of row 3 alone, not of all four
    untouched = ClassGuard("freematch", 2, 0.6, momentum=0.0)
    _, keep = untouched.targets(logits, torch.zeros(4, dtype=torch.bool))
    assert not keep.any() and torch.equal(untouched.mean_probs, torch.tensor([0.5, 0.5]))


@pytest.mark.parametrize("pseudo_from, kept", [("all", 1.0), ("class", 0.5)])
def test_pseudo_from_class_keeps_class_pseudo_labels_off_mask_only_sources(pseudo_from, kept):
    """Half the unlabeled rows come from a mask-only source: with ``class`` only the other
    half can get a class pseudo-label; their pixel pseudo-masks stay."""
    method = get_method(
        "multimix",
        {"pseudo_from": pseudo_from, "threshold": 0.5, "pixel_threshold": 0.5, "guard": "fixed"},
    )
    net = MultiMixNet(ModelConfig(widths=(4, 8, 8, 16, 16), bridge=True))
    method.setup(net)
    batch = _batch()
    batch[UNLABELED].class_domain = torch.tensor([True, False])
    _, logs = method.loss(net, batch)
    assert logs["pseudo_kept"] == kept and logs["pixel_kept"] == 1.0


def _batch(b=2, s=32) -> Batch:
    g = torch.Generator().manual_seed(0)

    def img():
        return torch.rand(b, 1, s, s, generator=g)

    weak = img()
    unlabeled = Draw(torch.arange(b), {"weak": View(weak), STRONG: View(weak.flip(-2))})
    return Batch(
        {
            MASKED: Draw.of(
                weak=img(), strong=img(), masks=(img() > 0.5).float(), known=torch.ones(b, 1) > 0
            ),
            LABELED: Draw.of(weak=img(), targets=torch.tensor([0, 1])),
            UNLABELED: unlabeled,
        }
    )


@pytest.mark.parametrize("teacher, rows", [("self", 6), ("ema", 4)])
def test_joint_step_decodes_masked_weak_and_strong_rows(teacher, rows):
    """2 masked + 2 weak + 2 strong rows reach the decoder; with an EMA teacher the student's
    weak rows (which would feed no loss) are left out, the teacher supplies the targets."""
    method = get_method("multimix", {"teacher": teacher, "pixel_threshold": 0.5})
    net = MultiMixNet(ModelConfig(widths=(4, 8, 8, 16, 16), bridge=True))
    method.setup(net)
    seen = []
    net.decoder.register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    loss, logs = method.loss(net, _batch())
    loss.backward()
    assert seen == [rows]  # the 2 class images skip the decoder
    assert logs["pixel_kept"] == 1.0 and logs["loss_pixel"] > 0  # threshold 0.5 keeps all
    assert "loss_kl" not in logs  # the paper's KL term is off by default (replaced)
    dec = [p.grad for p in net.decoder.parameters() if p.grad is not None]
    assert dec and any(g.abs().sum() > 0 for g in dec)


def test_without_a_pixel_loss_the_ema_teacher_skips_its_decoder():
    """With ``--w-pixel 0`` the EMA teacher's masks feed nothing: it gives class logits only,
    and the student's decoder sees the 2 masked rows."""
    method = get_method("multimix", {"teacher": "ema", "pixel": 0.0})
    net = MultiMixNet(ModelConfig(widths=(4, 8, 8, 16, 16), bridge=True))
    method.setup(net)
    seen, teacher_seen = [], []
    net.decoder.register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    method.teacher.decoder.register_forward_hook(lambda m, i, o: teacher_seen.append(1))
    _, logs = method.loss(net, _batch())
    assert seen == [2] and teacher_seen == [] and "loss_pseudo" in logs


@pytest.mark.parametrize("unlabeled_size", [0, 16])
def test_without_a_pixel_loss_the_decoder_skips_the_unlabeled_rows(unlabeled_size):
    """``--w-pixel 0`` (and no KL term): no loss reads the unlabeled rows' masks, so only the 2
    masked rows reach the decoder; the unlabeled rows still train the classifier through their
    class pseudo-labels, with the same logits as when they were decoded."""
    net = MultiMixNet(ModelConfig(widths=(4, 8, 8, 16, 16), bridge=True)).eval()
    logs = {}
    seen: dict[float, list[int]] = {}
    for pixel in (1.0, 0.0):
        method = get_method("multimix", {"pixel": pixel, "threshold": 0.0})
        method.options.unlabeled_size = unlabeled_size
        seen[pixel] = []
        hook = net.decoder.register_forward_hook(
            lambda m, i, o, p=pixel: seen[p].append(o.shape[0])
        )
        loss, logs[pixel] = method.loss(net, _batch())
        hook.remove()
        loss.backward()
    assert sum(seen[0.0]) == 2 and sum(seen[1.0]) == 6
    assert "loss_pixel" not in logs[0.0] and logs[0.0]["pseudo_kept"] == 1.0
    assert logs[0.0]["loss_pseudo"] == pytest.approx(logs[1.0]["loss_pseudo"], rel=1e-5)


@pytest.mark.parametrize("teacher, rows", [("self", [2, 4]), ("ema", [2, 2])])
def test_smaller_unlabeled_views_get_an_encoder_pass_of_their_own(teacher, rows):
    """``unlabeled_size`` shrinks the weak and strong views (32 -> 16 px here): the masked and
    class rows keep their pass, the unlabeled rows get a second one whose masks are 16 px, and
    the pixel pseudo-masks and class pseudo-labels are read from it."""
    method = get_method(
        "multimix", {"unlabeled_size": 32, "teacher": teacher, "pixel_threshold": 0.5}
    )
    method.options.unlabeled_size = 16  # below the options' floor, to keep the test small
    net = MultiMixNet(ModelConfig(widths=(4, 8, 8, 16, 16), bridge=True))
    method.setup(net)
    seen = []
    net.decoder.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    loss, logs = method.loss(net, _batch())
    loss.backward()
    assert [s[0] for s in seen] == rows
    assert seen[0][-1] == 32 and seen[1][-1] == 16
    assert logs["pixel_kept"] == 1.0 and logs["loss_pixel"] > 0 and "loss_pseudo" in logs


def test_unlabeled_size_at_the_image_size_is_the_one_pass_step():
    """Asking for the run's own size changes nothing: the same single concatenated pass."""
    net = MultiMixNet(ModelConfig(widths=(4, 8, 8, 16, 16), bridge=True))
    torch.manual_seed(0)  # the classifier's dropout
    a = get_method("multimix").loss(net, _batch())[1]
    torch.manual_seed(0)
    b = get_method("multimix", {"unlabeled_size": 32}).loss(net, _batch())[1]
    assert a == b


def test_ema_student_pass_keeps_its_weak_rows_for_the_kl_term():
    """The KL term compares the student's masked and weak rows, so it brings them back."""
    method = get_method("multimix", {"teacher": "ema", "consistency": 0.1})
    net = MultiMixNet(ModelConfig(widths=(4, 8, 8, 16, 16), bridge=True))
    method.setup(net)
    seen = []
    net.decoder.register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    _, logs = method.loss(net, _batch())
    assert seen == [6] and logs["loss_kl"] > 0  # masked and weak rows are other images


def test_ema_pixel_loss_reads_the_strong_rows_against_the_teachers_masks():
    """Without the weak rows the strong ones sit right after the masked ones: the pixel loss
    is the student's strong-row mask logits against the teacher's CutMixed weak-view masks."""
    method = get_method("multimix", {"teacher": "ema", "pixel_threshold": 0.5})
    net = MultiMixNet(ModelConfig(widths=(4, 8, 8, 16, 16), bridge=True))
    method.setup(net)
    out = []
    net.decoder.register_forward_hook(lambda m, i, o: out.append(o.detach()))
    batch = _batch()
    _, logs = method.loss(net, batch, step=3)
    weak_x = batch[UNLABELED]["weak"].x
    gen = torch.Generator().manual_seed(3 * 1_000_003 + 17)
    box, source = cutmix_boxes(len(weak_x), tuple(weak_x.shape[-2:]), method.options.cutmix, gen)
    with torch.no_grad():
        _, teacher_masks = method._teacher_targets(weak_x)
    expected, _ = pixel_pseudo_loss(out[0][2:4], mix(teacher_masks, box, source), 0.5)
    assert logs["loss_pixel"] == pytest.approx(expected.item(), rel=1e-6)
    wrong, _ = pixel_pseudo_loss(out[0][0:2], mix(teacher_masks, box, source), 0.5)
    assert wrong.item() != pytest.approx(expected.item(), rel=1e-6)  # the rows matter


def test_mask_view_strong_trains_the_decoder_on_the_strong_masked_view():
    """``mask_view=strong`` draws the masked images in the strong view (masks follow its
    geometry: tests/data) and the supervised Dice/BCE reads that view's masks."""
    method = get_method("multimix", {"pixel": 0.0})
    assert method.streams[MASKED].views == ("strong",) and method.streams[MASKED].masks
    weak = get_method("multimix", {"mask_view": "weak"})
    assert weak.streams[MASKED].views == ("weak",)
    net = MultiMixNet(ModelConfig(widths=(4, 8, 8, 16, 16), bridge=True))
    batch = _batch()
    seg = batch[MASKED]
    x, masks = seg["weak"].x, seg["weak"].masks
    batch[MASKED] = Draw.of(strong=x, masks=masks, known=seg.known)
    _, logs = method.loss(net, batch)
    inverted = Draw.of(strong=x, masks=1 - masks, known=seg.known)
    batch[MASKED] = inverted
    _, logs_inverted = method.loss(net, batch)
    assert logs["loss_seg"] != logs_inverted["loss_seg"]  # the strong view's masks count
    with pytest.raises(KeyError):
        weak.loss(net, batch)  # mask_view=weak finds no weak view


def test_class_view_strong_trains_the_classifier_on_the_strong_labeled_view():
    """``class_view=strong`` draws the labeled images in the strong view, and the supervised
    cross-entropy reads that view's images."""
    assert get_method("multimix").streams[LABELED].views == ("weak",)
    method = get_method("multimix", {"class_view": "strong"})
    assert method.streams[LABELED].views == ("strong",) and method.streams[LABELED].targets
    net = MultiMixNet(ModelConfig(widths=(4, 8, 8, 16, 16), bridge=True))
    batch = _batch()
    x, targets = batch[LABELED]["weak"].x, batch[LABELED].targets
    batch[LABELED] = Draw.of(strong=x, targets=targets)
    _, logs = method.loss(net, batch)
    batch[LABELED] = Draw.of(strong=x.flip(-1) * 0.5, targets=targets)
    _, logs_other = method.loss(net, batch)
    assert logs["loss_cls"] != logs_other["loss_cls"]  # the strong view's images count
    with pytest.raises(KeyError):
        get_method("multimix").loss(net, batch)  # class_view=weak finds no weak view


def test_unlabeled_from_warms_up_supervised_then_keeps_the_schedule():
    method = get_method("multimix", {"unlabeled_every": 2, "unlabeled_from": 5})
    drawn = [UNLABELED in method.streams_at(step) for step in range(10)]
    assert drawn == [False] * 5 + [False, True, False, True, False]
    with pytest.raises(ConfigError, match="--unlabeled-from"):
        get_method("multimix", {"unlabeled_from": -1})


def test_unlabeled_every_leaves_the_unlabeled_stream_out_between_its_steps():
    """``unlabeled_every=3`` draws the unlabeled views on steps 0, 3, 6, ...; the steps in
    between are supervised only (masked and labeled rows) and still train both heads."""
    method = get_method("multimix", {"unlabeled_every": 3, "unlabeled_from": 0})
    drawn = [UNLABELED in method.streams_at(step) for step in range(7)]
    assert drawn == [True, False, False, True, False, False, True]
    assert set(method.streams_at(1)) == {MASKED, LABELED}
    assert UNLABELED in method.streams  # the trainer still builds its pool
    net = MultiMixNet(ModelConfig(widths=(4, 8, 8, 16, 16), bridge=True))
    seen = []
    net.decoder.register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    batch = _batch()
    del batch[UNLABELED]
    loss, logs = method.loss(net, batch, step=1)
    loss.backward()
    assert seen == [2]  # only the masked rows reach the decoder
    assert "loss_pixel" not in logs and "loss_pseudo" not in logs
    w = method.options
    expected = w.seg * logs["loss_seg"] + w.cls * logs["loss_cls"]
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.decoder.parameters())


def test_bridge_off_builds_no_bridge_and_skips_the_saliency_walk(monkeypatch):
    """``bridge=false``: the trainer builds the net without the bridge, and the step neither
    walks the saliency nor hands the decoder anything but the encoder's features."""
    import multimix.methods.joint as joint

    method = get_method("multimix", {"bridge": False})
    assert not method.uses_bridge and get_method("multimix").uses_bridge

    def walked(*args, **kwargs):
        raise AssertionError("saliency computed without a bridge")

    monkeypatch.setattr(joint, "bridge_trace", walked)
    monkeypatch.setattr(joint, "bridge_saliency", walked)
    net = MultiMixNet(ModelConfig(widths=(4, 8, 8, 16, 16), bridge=method.uses_bridge))
    assert net.bridge is None
    loss, logs = method.loss(net, _batch())
    loss.backward()
    assert logs["loss_seg"] > 0 and "loss_pseudo" in logs


def test_bad_joint_options_are_one_line_errors():
    with pytest.raises(ConfigError, match="--guard"):
        get_method("multimix", {"guard": "hope"})
    with pytest.raises(ConfigError, match="--teacher"):
        get_method("multimix", {"teacher": "oracle"})
    with pytest.raises(ConfigError, match="--pixel-threshold"):
        get_method("multimix", {"pixel_threshold": 0.2})
    with pytest.raises(ConfigError, match="--mask-view"):
        get_method("multimix", {"mask_view": "sideways"})
    with pytest.raises(ConfigError, match="--class-view"):
        get_method("multimix", {"class_view": "sideways"})
    with pytest.raises(ConfigError, match="--unlabeled-every"):
        get_method("multimix", {"unlabeled_every": 0})
    with pytest.raises(ConfigError, match="--unlabeled-size"):
        get_method("multimix", {"unlabeled_size": 8})
    with pytest.raises(ConfigError, match="--unlabeled-size 0"):
        get_method("multimix", {"unlabeled_size": 64, "consistency": 0.01})
    with pytest.raises(ConfigError, match="--pseudo-from"):
        get_method("multimix", {"pseudo_from": "somewhere"})


def test_ema_teacher_and_guard_state_resume_exactly(tmp_path, phantom_dirs):
    def cfg(name: str) -> TrainConfig:
        return TrainConfig(
            out=str(tmp_path / name),
            method="multimix",
            method_options={
                "teacher": "ema",
                "guard": "freematch",
                "unlabeled_every": 2,
                "unlabeled_from": 0,
            },
            class_data=[str(phantom_dirs["cls"])],
            seg_data=[str(phantom_dirs["seg"])],
            labeled_class=12,
            labeled_seg=6,
            image_size=32,
            widths=[8, 16, 16, 32, 32],
            batch_size=4,
            steps=6,
            val_every=3,
        )

    full = train(cfg("full"))
    resumed = stop_then_resume(cfg("resumed"), stop_after=2)
    assert_same_weights(full, resumed)
    a = load_state(full / "checkpoints" / "last.state.pt")["method"]
    b = load_state(resumed / "checkpoints" / "last.state.pt")["method"]
    assert a["teacher"].keys() == b["teacher"].keys()
    for key in a["teacher"]:
        assert torch.equal(a["teacher"][key], b["teacher"][key]), key
    for key in ("prior", "mean_probs", "confidence"):
        assert torch.equal(a["guard"][key], b["guard"][key]), key
    # The teacher is an average of the student's weights, not a copy of them.
    student = load_weights(full / "checkpoints" / "last.safetensors").state_dict()
    key = "classifier.fc.weight" if "classifier.fc.weight" in student else next(iter(student))
    assert not torch.equal(a["teacher"][key], student[key])
