from schemas.config import Config, SizesConfig


def test_sizes_do_not_change_which_samples_a_curator_owns():
    small = Config(sizes=SizesConfig(sft=6, rl=4))
    assert small.curation_fingerprint() == Config().curation_fingerprint()
    assert small.fingerprint() != Config().fingerprint()


def test_stage_fingerprints_follow_their_own_settings_only():
    base = Config()
    changed_painter = Config.model_validate({"painter": {"steps": 5}})
    assert changed_painter.painter_fingerprint() != base.painter_fingerprint()
    assert changed_painter.teacher_fingerprint() == base.teacher_fingerprint()
    assert changed_painter.writer_fingerprint() == base.writer_fingerprint()
    # where the painter runs does not change what it paints
    assert Config.model_validate({"painter": {"device": "cuda", "batch_size": 16}}).painter_fingerprint() == (
        base.painter_fingerprint()
    )
