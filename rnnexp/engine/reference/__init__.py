"""Slow, literal models that the fast engine is tested against: the tutorial's RNN gate by gate
(`tutorial`) and the GRU and LSTM gate by gate (`gated`)."""
