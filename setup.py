"""keras-alexnet: the paper-faithful AlexNet on TensorFlow/Keras, from ILSVRC tars to TF Serving."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="keras-alexnet",
    version="0.1.0",
    description=(
        "AlexNet (Krizhevsky, Sutskever, Hinton, 2012) in Keras 3: ILSVRC to TFRecords, "
        "two-tower training, 10-crop evaluation, SavedModel export and TF Serving gRPC."
    ),
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",  # keras 3.15, numpy 2.4 and scipy 1.17 need 3.11
    packages=find_packages(include=["keras_alexnet*", "serving*", "tfrecords_tools*"]),
    # The ILSVRC-2012 class names, shipped so that naming them needs no download.
    package_data={"keras_alexnet": ["synset_words.txt"]},
    install_requires=[
        # tensorflow, not tensorflow-cpu: tensorflow-serving-api depends on the former.
        "tensorflow>=2.21,<3",
        "keras>=3.15,<4",
        "tensorflow-serving-api>=2.21,<3",
        "grpcio>=1.70,<2",
        "grpcio-health-checking>=1.70,<2",
        "prometheus-client>=0.20,<1",  # the local server's metrics (serving/monitoring.py)
        "numpy>=1.26,<3",
        "pillow>=10,<14",
        # The converter's fast JPEG path: libjpeg-turbo's DCT-scaled decode and encode,
        # OpenCV's bit-exact bilinear resize (tfrecords_tools/images.py).
        "simplejpeg>=1.9,<2",
        "opencv-python-headless>=4.8,<6",
        # The converter's workers frame TFRecords themselves (CRC-32C), without TensorFlow.
        "google-crc32c>=1.5,<2",
        "scipy>=1.11,<2",
        "matplotlib>=3.8,<4",
        "tqdm>=4.66,<5",
        "tensorboard>=2.21,<3",  # fit's TensorBoard logs; tensorflow no longer pulls it in
    ],
    extras_require={
        # Reading ONNX zoo weights (keras_alexnet.bvlc) and writing ONNX (keras_alexnet.portable,
        # through Keras's exporter, which uses tf2onnx with TensorFlow); onnxruntime runs it.
        "onnx": ["onnx>=1.16,<2", "tf2onnx>=1.17,<2", "onnxruntime>=1.18,<2"],
        # OpenVINO IR: the converter and the runtime are one package.
        "openvino": ["openvino>=2026.0,<2028"],
        # LiteRT: TensorFlow converts; this is the interpreter that runs the .tflite file.
        "litert": ["ai-edge-litert>=2.3,<3"],
        # NVIDIA GPUs: TensorFlow with the CUDA and cuDNN wheels it was built against.
        "gpu": ["tensorflow[and-cuda]>=2.21,<3"],
        # pytest-xdist: the README's test command runs the suite on two processes.
        "test": ["pytest>=8,<10", "pytest-xdist>=3.5,<4", "ruff>=0.6", "cryptography>=42",
                 "onnx>=1.16,<2",
                 "onnxruntime>=1.18,<2", "tf2onnx>=1.17,<2", "openvino>=2026.0,<2028",
                 "ai-edge-litert>=2.3,<3",
                 # The reference of the TFDS tests; the product reads TFDS directories
                 # from their JSON metadata without it (tfrecords_tools/tfds.py).
                 "tensorflow-datasets>=4.9,<5",
                 # The reference of the linear probe (keras_alexnet/probe.py).
                 "scikit-learn>=1.4,<2"],
        # The benchmarks: the grouped PyTorch AlexNet (train_step.py), the probe floor
        # of the transfer benchmark (scikit-learn).
        "bench": ["torch==2.13.0", "scikit-learn>=1.4,<2"],
    },
    entry_points={
        "console_scripts": [
            "keras-alexnet=keras_alexnet.commands:main",
            "alexnet-serving=serving.__main__:main",
            "ilsvrc-to-tfrecords=tfrecords_tools.__main__:main",
        ]
    },
)
