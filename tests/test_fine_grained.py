"""CUB-200-2011, FGVC-Aircraft and Stanford Cars read in place in their official layouts, written here in
miniature: the splits, the 0-based labels, the class counts, and one line for each missing file."""

import pytest

from lgm_gcp.data.check import check_dataset
from lgm_gcp.errors import DatasetError
from lgm_gcp.options.instantiate import instantiate

from conftest import resolved
from datafiles import write_aircraft, write_cars, write_cub

SMALL = ["dataset.image_size=16", "dataset.resize=18"]


def data_of(name, root, *extra):
    cfg = resolved(f"dataset={name}", f"dataset.root={root}", *SMALL, *extra)["dataset"]
    check_dataset(cfg)
    return instantiate(cfg, num_workers=0)


def labels(split) -> list:
    return [label for _, label in split.samples]


def test_cub_reads_its_split_file_and_makes_the_classes_0_based(tmp_path):
    write_cub(tmp_path)
    data = data_of("cub", tmp_path, "dataset.num_classes=3")
    assert (labels(data.train_set), labels(data.test_set)) == ([0, 1, 2], [0, 2])
    assert data.train_set.samples[0][0].endswith("CUB_200_2011/images/001.Albatross/a1.jpg")
    images, targets = next(iter(data.train_batches(3, seed=0, epoch=0)))
    assert images.shape == (3, 3, 16, 16) and sorted(targets.tolist()) == [0, 1, 2]


def test_aircraft_reads_trainval_and_test_at_the_chosen_level(tmp_path):
    write_aircraft(tmp_path)
    variant = data_of("aircraft", tmp_path, "dataset.num_classes=2")
    assert (labels(variant.train_set), labels(variant.test_set)) == ([0, 1, 1], [0])
    family = data_of("aircraft", tmp_path, "dataset.num_classes=2", "dataset.level=family")
    assert (labels(family.train_set), labels(family.test_set)) == ([1, 0, 0], [1])
    with pytest.raises(DatasetError, match=r"images_manufacturer_trainval.txt does not exist|manufacturers.txt does"):
        data_of("aircraft", tmp_path, "dataset.num_classes=2", "dataset.level=manufacturer")


def test_cars_reads_torchvisions_devkit_annotations(tmp_path):
    write_cars(tmp_path)
    data = data_of("cars", tmp_path, "dataset.num_classes=3")
    assert (labels(data.train_set), labels(data.test_set)) == ([0, 1, 2, 0], [2, 1])
    assert all(isinstance(label, int) for label in labels(data.train_set))


@pytest.mark.parametrize("name,write,missing", [
    ("cub", write_cub, "image_class_labels.txt"),
    ("aircraft", write_aircraft, "images_variant_test.txt"),
    ("cars", write_cars, "cars_test_annos_withlabels.mat"),
])
def test_a_missing_file_is_one_line_naming_it(tmp_path, name, write, missing):
    write(tmp_path)
    next(tmp_path.rglob(missing)).unlink()
    with pytest.raises(DatasetError, match=rf"^{name}: .*{missing}"):
        data_of(name, tmp_path, "dataset.num_classes=3" if name != "aircraft" else "dataset.num_classes=2")


def test_the_class_count_must_match_the_config(tmp_path):
    write_cub(tmp_path)
    with pytest.raises(DatasetError, match=r"^cub: .* has 3 classes but dataset.num_classes=200$"):
        data_of("cub", tmp_path)


def test_a_split_the_benchmark_does_not_have_is_one_line(tmp_path):
    write_cub(tmp_path)
    with pytest.raises(DatasetError, match=r"^cub: no split 'val'; its splits are train, test"):
        data_of("cub", tmp_path, "dataset.num_classes=3", "dataset.val_dir=val")


def first_image_sizes(data) -> tuple:
    """(height, width) of the first train and test image as read and cropped, before the transform."""
    sizes = []
    for split in (data.train_set, data.test_set):
        split.transform = lambda image: image
        image = split[(0, None)][0]
        sizes.append(tuple(image.shape[-2:]) if hasattr(image, "shape") else (image.height, image.width))
    return tuple(sizes)


@pytest.mark.parametrize("decoder", ["tensor", "pil"])
def test_cub_bbox_crop_cuts_each_image_to_its_box(tmp_path, decoder):
    """bounding_boxes.txt gives image i the box x = 1, y = 2, width i, height 2i: the first train image (id 1)
    is 2 rows by 1 column, the first test image (id 4) 8 by 4. Without the crop they are 20 by 24."""
    write_cub(tmp_path)
    common = ["dataset.num_classes=3", f"dataset.decoder={decoder}"]
    assert first_image_sizes(data_of("cub", tmp_path, *common, "dataset.crop=bbox")) == ((2, 1), (8, 4))
    assert first_image_sizes(data_of("cub", tmp_path, *common)) == ((20, 24), (20, 24))


def test_aircraft_banner_crop_cuts_the_bottom_20_rows(tmp_path):
    write_aircraft(tmp_path)
    data = data_of("aircraft", tmp_path, "dataset.num_classes=2", "dataset.crop=banner")
    assert first_image_sizes(data) == ((30, 24), (30, 24))


def test_a_crop_the_benchmark_does_not_have_is_one_line(tmp_path):
    write_aircraft(tmp_path)
    with pytest.raises(DatasetError, match="dataset.crop=bbox applies to dataset=cub only, not layout aircraft"):
        data_of("aircraft", tmp_path, "dataset.num_classes=2", "dataset.crop=bbox")
