"""What the tutorials published, with where: the figures the reproduction is held against.

WildML: "Recurrent Neural Networks Tutorial, Part 2" (wildml.com, 2015) and its notebook in
github.com/dennybritz/rnn-tutorial-rnnlm. Gate-based: the "Implementing Recurrent Neural Network
from Scratch" README (github.com/pangolulu/rnn-from-scratch), which reuses WildML's data and setup.
"""

from __future__ import annotations

import math

WILDML = "WildML part 2"
GATE_BASED = "RNN from scratch (gate-based)"
TUTORIAL = "the tutorial (rnn-from-scratch)"  # a claim's source: the gate-based tutorial's own text or code

# 1. Data: the notebook's printout for the full CSV (vocabulary 8000).
FULL_CSV_BYTES = 7_603_068
SENTENCES_PARSED = 79_170
UNIQUE_WORD_TOKENS = 65_751
LEAST_FREQUENT_WORD = "devoted"
LEAST_FREQUENT_COUNT = 10
VOCABULARY_SIZE = 8000
# The notebook's example pair (X_train[17]): the same words must come out of our pipeline.
EXAMPLE_INDEX = 17
EXAMPLE_SENTENCE = "SENTENCE_START what are n't you understanding about this ? !"
EXAMPLE_TARGET = "what are n't you understanding about this ? ! SENTENCE_END"
# The notebook's X_train[10], on which the step is timed, has 45 words ("45 above").
TIMED_SENTENCE_INDEX = 10
TIMED_SENTENCE_LENGTH = 45

# 2. Untrained loss: np.random.seed(10), RNNNumpy(8000) (H=100), X_train[:1000].
EXPECTED_LOSS = math.log(VOCABULARY_SIZE)  # 8.987197
MEASURED_UNTRAINED_LOSS = 8.987440
UNTRAINED_SENTENCES = 1000
UNTRAINED_SEED = 10

# 3. WildML's gradient check: RNNNumpy(100, 10, bptt_truncate=1000), x=[0,1,2,3], y=[1,2,3,4].
GRADCHECK_VOCAB = 100
GRADCHECK_HIDDEN = 10
GRADCHECK_X = (0, 1, 2, 3)
GRADCHECK_Y = (1, 2, 3, 4)
GRADCHECK_H = 0.001
GRADCHECK_THRESHOLD = 0.01
GRADCHECK_WILDML_TRUNCATE = 1000

# 4. One SGD step on X_train[10], V=8000, H=100, in seconds.
STEP_SECONDS = {
    f"gate-based NumPy ({GATE_BASED})": None,  # "a few seconds on my laptop"
    f"WildML NumPy ({WILDML})": 0.350,
    "WildML Theano, CPU (Mac laptop)": 0.070,
    "WildML Theano, GPU (EC2 g2.2xlarge)": 0.023,
}
GATE_STEP_TEXT = "a few seconds"

# 5. train_with_sgd(model, X_train[:100], y_train[:100], nepoch=10, evaluate_loss_after=1), lr 0.005.
SGD_SENTENCES = 100
SGD_EPOCHS = 10
SGD_LR = 0.005
SGD_LOSSES = (8.987425, 8.976270, 8.960212, 8.930430, 8.862264, 6.913570, 6.302493, 6.014995, 5.833877, 5.710718)

# 6. "About 80,000 examples ... one epoch would take several hours"; the pretrained Theano model
# (H=50, V=8000, 50 epochs) "in about 20 hours".
EPOCH_TEXT = "several hours per epoch (NumPy, 350 ms per step); days or even weeks to train with the plain loop"
PRETRAINED_HIDDEN = 50
PRETRAINED_EPOCHS = 50
PRETRAINED_HOURS = 20.0
PRETRAINED_EVALUATE_LOSS_AFTER = 5

# 7. Sampling: never UNKNOWN_TOKEN, sentences of at least `senten_min_length` words.
SAMPLE_MIN_WORDS = 7
SAMPLE_COUNT = 10
SAMPLES = (
    "Anyway, to the city scene you're an idiot teenager.",
    "What ? ! ! ! ! ignore!",
    "Screw fitness, you're saying: https",
    "Thanks for the advice to keep my thoughts around girls.",
    "Yep, please disappear with the terrible generation.",
)
