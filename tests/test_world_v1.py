import numpy as np

from sdlearn.mini import world_v1 as world


def test_sample_is_a_pure_function_of_seed_and_index():
    a, b = world.sample(3, 7), world.sample(3, 7)
    assert np.array_equal(a.image, b.image) and a.caption == b.caption
    assert not np.array_equal(world.sample(4, 7).image, a.image)


def test_sample_fields_and_ranges():
    s = world.sample(0, 0)
    assert s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8
    assert s.mask.shape == (64, 64) and set(np.unique(s.mask)) <= {0, 255}
    assert s.depth.dtype == np.float32 and 0 <= s.depth.min() and s.depth.max() <= 1
    # Objects stand out in depth: nearer (larger) inside the mask than outside.
    assert s.depth[s.mask > 0].mean() > s.depth[s.mask == 0].mean()


def test_world_covers_the_promised_vocabulary():
    scenes = [world.sample(1, i).scene for i in range(400)]
    shapes = {o.shape for sc in scenes for o in sc.objects}
    colours = {o.colour for sc in scenes for o in sc.objects}
    positions = {o.position for sc in scenes for o in sc.objects}
    assert shapes == set(world.SHAPES) and len(colours) >= 8 and positions == set(world.POSITIONS)
    assert any(len(sc.objects) == 2 for sc in scenes)
    assert len({sc.caption.split(" ")[0] for sc in scenes}) >= 2  # several phrasings


def test_caption_names_what_is_drawn():
    for i in range(50):
        s = world.sample(2, i)
        for o in s.scene.objects:
            assert o.colour in s.caption and o.shape in s.caption
        assert s.scene.background not in {o.colour for o in s.scene.objects}
        if s.scene.mentions_background:
            assert f"{s.scene.background} background" in s.caption


def test_pixels_match_the_attributes():
    s = world.sample(5, 11)
    bg = np.array(world.PALETTE[s.scene.background])
    assert np.abs(s.image[0, 0].astype(int) - bg).max() <= 2  # corners are background
    inside = s.image[s.mask > 0].astype(int)
    colours = [np.array(world.PALETTE[o.colour]) for o in s.scene.objects]
    assert min(np.abs(np.median(inside, 0) - c).max() for c in colours) <= 2
