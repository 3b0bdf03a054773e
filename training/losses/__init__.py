"""Training losses: OHEM CE, class prototypes, SGM (EQUISeg), HPDM, logit KD and FSM (RMMSS)."""
from .fsm import FeatureSelectionModule
from .hpdm import HPDMLoss, hpdm_permutation, teacher_prototypes
from .kd import logit_kd
from .ohem import OhemCrossEntropy, upsample_logits
from .prototypes import class_prototypes, downsample_labels, prototype_kl
from .sgm import SGMLoss, sgm_pairs

__all__ = ["FeatureSelectionModule", "HPDMLoss", "OhemCrossEntropy", "SGMLoss", "class_prototypes",
           "downsample_labels", "hpdm_permutation", "logit_kd", "prototype_kl", "sgm_pairs", "teacher_prototypes",
           "upsample_logits"]
