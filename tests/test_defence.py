import dataclasses

import pytest
import torch

from ciidefence import (
    STRENGTHS,
    CIIDefence,
    CIIDefenceConfig,
    ConfigError,
    DefendedClassifier,
    load_image,
    purify,
    strength_config,
)


def test_purification_keeps_the_image_size_and_the_pixels_outside_the_mask(classifier, photo):
    result = purify(photo, classifier)
    assert result.output.shape == photo.shape
    assert result.mask.shape == (1, *photo.shape[-2:])
    assert 0 < float(result.mask.float().mean()) < 0.2
    inside = result.mask[:, None].expand_as(photo)
    assert torch.equal(result.output[inside], result.inpainted[inside])
    assert torch.equal(result.output[~inside], result.denoised[~inside])
    assert not torch.equal(result.output, photo)


def test_denoise_after_variant(classifier, photo):
    config = CIIDefenceConfig(fusion="denoise-after")
    result = purify(photo, classifier, config)
    assert torch.equal(result.output, result.denoised)


def test_batches_of_different_images(classifier, sample_paths):
    images = torch.stack([load_image(p)[:, :200, :200] for p in sample_paths[:3]])
    batched = purify(images, classifier).output
    single = torch.cat([purify(x[None], classifier).output for x in images])
    assert torch.allclose(batched, single, atol=1e-6)


def test_same_input_gives_bit_identical_output(classifier, photo):
    first = purify(photo, classifier).output
    second = purify(photo.clone(), classifier).output
    assert torch.equal(first, second)


def test_defended_classifier_classifies_the_purified_image(classifier, photo):
    defence = CIIDefence(classifier)
    defended = DefendedClassifier(classifier, defence)
    with torch.no_grad():
        logits = defended(photo)
        assert torch.equal(logits, classifier(defence(photo)))
    assert logits.shape == (1, 1000)


@pytest.mark.parametrize("changes", [
    {"top_k": 0}, {"peaks": -1}, {"half_width": -2}, {"inpainter": "magic"}, {"threshold": "sure"},
    {"fusion": "blend"}, {"sigma": -0.1}, {"wavelet": "nope"}, {"inpainter": "learned"},
    {"inpaint_radius": 0}, {"peak_threshold": 1.0}, {"wavelet_backend": "matlab"}, {"sigma": float("inf")},
])
def test_bad_config_values(changes):
    with pytest.raises(ConfigError):
        CIIDefenceConfig(**changes)


def test_config_is_frozen_and_hashable():
    config = CIIDefenceConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.top_k = 9
    assert hash(config) == hash(CIIDefenceConfig()) and config == CIIDefenceConfig()
    assert config != dataclasses.replace(config, sigma=2 * config.sigma)


def test_the_strength_presets_exist_light_differs_and_balanced_is_the_default():
    configs = {name: strength_config(name) for name in STRENGTHS}
    assert set(configs) == {"light", "balanced"}
    assert configs["balanced"] == CIIDefenceConfig()
    assert configs["light"] != configs["balanced"]
    assert configs["light"].sigma < configs["balanced"].sigma
    with pytest.raises(ConfigError, match="unknown strength"):
        strength_config("extreme")
    with pytest.raises(ConfigError, match="'strong' was removed: it was the same point as balanced"):
        strength_config("strong")


def test_options_given_on_the_command_line_override_the_strength():
    import json

    import click
    from click.testing import CliRunner

    from ciidefence.cli.options import defence_options

    @click.command()
    @defence_options
    def show(config):
        click.echo(json.dumps(config.to_dict()))

    def run(*args):
        result = CliRunner().invoke(show, list(args))
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    assert run() == CIIDefenceConfig().to_dict()
    assert run("--strength", "light") == strength_config("light").to_dict()
    overridden = run("--strength", "light", "--top-k", "1", "--sigma", "0.001")
    assert overridden == dataclasses.replace(strength_config("light"), top_k=1, sigma=0.001).to_dict()
    refused = CliRunner().invoke(show, ["--strength", "strong"])
    assert refused.exit_code == 2 and "'strong' was removed" in refused.output
    given_at_its_default = run("--strength", "light", "--sigma", str(CIIDefenceConfig().sigma))
    assert given_at_its_default["sigma"] == CIIDefenceConfig().sigma != strength_config("light").sigma
