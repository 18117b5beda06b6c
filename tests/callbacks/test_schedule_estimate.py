"""The start-of-training estimate (callbacks/schedule_estimate.py) counts what the run will do."""

from types import SimpleNamespace

from fundus2ffa.callbacks.schedule_estimate import ScheduleEstimate


def _trainer(**overrides):
    values = dict(num_training_batches=100, max_epochs=1000, current_epoch=0, max_steps=-1, global_step=0,
                  optimizers=[object(), object()])
    return SimpleNamespace(**{**values, **overrides})


def test_epochs_without_a_step_limit():
    estimate = ScheduleEstimate()
    estimate.on_train_start(_trainer(max_epochs=3, current_epoch=1), SimpleNamespace(hparams={}))
    assert estimate.total_iterations == 200


def test_max_steps_caps_the_iterations_of_a_gan():
    """1000 epochs capped at trainer.max_steps=2400 optimizer steps are 1200 G+D iterations (it used to
    promise 100,000 iterations: days instead of minutes); resumed at step 2000, 200 remain."""
    estimate = ScheduleEstimate()
    estimate.on_train_start(_trainer(max_steps=2400), SimpleNamespace(hparams={}))
    assert estimate.total_iterations == 1200
    estimate.on_train_start(_trainer(max_steps=2400, global_step=2000), SimpleNamespace(hparams={}))
    assert estimate.total_iterations == 200
