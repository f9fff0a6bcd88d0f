"""The kerasgen terminal dashboard (``kerasgen tui --db PATH``, ``python -m tui PATH``).

Importing this package loads nothing: the app lives in ``tui.app``, the data layer
(pandas, the store; never TensorFlow) in ``tui.data``.
"""
