#!/usr/bin/env bash
# Quality runs on a GPU machine that has PyTorch but not this project's other dependencies: the library
# (mmcore) runs through bench/direct.py, no Prefect or MLflow. Several runs share the GPU at once.
#   OUT=results-folder bash bench/gpu_quality.sh
set -u
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:.
fi
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=3
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, pydantic; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
mkdir -p data2/raw data3/raw
ln -sfn "$PWD/data/raw/easy-vqa" data2/raw/easy-vqa
ln -sfn "$PWD/data/raw/shapes-large" data3/raw/shapes-large
python3 -c "
from mmcore.data.synth import generate_shapes
generate_shapes('data/raw/shapes-large', 21000, seed=0, image_size=64, test_images=1000)" &
gen=$!
run() {  # name, then bench.direct arguments
  local name=$1; shift
  timeout "${LIMIT:-480}" python3 -m bench.direct --threads 3 --out "/tmp/$name.json" "$@" > "$OUT/$name.log" 2>&1
  echo "exit $?" >> "$OUT/$name.log"
}
run easy-vqa --preset easy-vqa &
run easy-vqa-long --preset easy-vqa --set data_root=data2 --set pretrain.epochs=20 --set heads.epochs=20 &
wait $gen
run shapes-gru --preset shapes-large &
run shapes-transformer --preset shapes-large --set data_root=data3 --set encoder.text_rnn=transformer \
  --set encoder.text_layers=4 &
wait
