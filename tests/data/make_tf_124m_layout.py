"""How tests/data/tf-124m-layout.ckpt.index was made: real TensorFlow (2.21, tf.compat.v1 Saver) writing a
checkpoint with OpenAI's variable names and GPT-2 124M shapes, random values. Only the 5 KB index is kept (the
500 MB data file is not); it lets the tests check the reader on a full-size OpenAI layout: 148 entries, keys
sorted h0, h1, h10, h11, h2, ..., prefix-compressed with restart points. Needs TensorFlow; not run by the tests.

    python tests/data/make_tf_124m_layout.py /tmp/out && cp /tmp/out/model.ckpt.index tests/data/tf-124m-layout.ckpt.index
"""
import sys

import numpy as np
import tensorflow as tf

out = sys.argv[1]
tf.compat.v1.disable_eager_execution()
C, L, V, N = 768, 12, 50257, 1024
shapes = {"model/wte": (V, C), "model/wpe": (N, C), "model/ln_f/g": (C,), "model/ln_f/b": (C,)}
for i in range(L):
    shapes.update({f"model/h{i}/ln_1/g": (C,), f"model/h{i}/ln_1/b": (C,), f"model/h{i}/attn/c_attn/w": (1, C, 3*C),
                   f"model/h{i}/attn/c_attn/b": (3*C,), f"model/h{i}/attn/c_proj/w": (1, C, C), f"model/h{i}/attn/c_proj/b": (C,),
                   f"model/h{i}/ln_2/g": (C,), f"model/h{i}/ln_2/b": (C,), f"model/h{i}/mlp/c_fc/w": (1, C, 4*C),
                   f"model/h{i}/mlp/c_fc/b": (4*C,), f"model/h{i}/mlp/c_proj/w": (1, 4*C, C), f"model/h{i}/mlp/c_proj/b": (C,)})
rng = np.random.default_rng(0)
values = {k: (rng.standard_normal(s) * 0.02).astype(np.float32) for k, s in shapes.items()}
vs = [tf.compat.v1.get_variable(k, initializer=v) for k, v in values.items()]
saver = tf.compat.v1.train.Saver()
with tf.compat.v1.Session() as sess:
    sess.run(tf.compat.v1.global_variables_initializer())
    saver.save(sess, f"{out}/model.ckpt", write_meta_graph=False)
print("written", out)
