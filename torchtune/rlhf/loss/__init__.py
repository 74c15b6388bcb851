"""Preference losses as config components (``_component_: torchtune.rlhf.loss.DPOLoss``)."""

from torchtune.rlhf.loss._preference import DPOLoss, IPOLoss, RSOLoss, SimPOLoss

__all__ = ["DPOLoss", "IPOLoss", "RSOLoss", "SimPOLoss"]
