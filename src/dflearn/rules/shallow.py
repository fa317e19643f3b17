from .base import Rule, register_rule


@register_rule
class Shallow(Rule):
    """Control of seed 001: only the last hidden block and the head learn (by BP);
    earlier blocks get no signal at all and keep their initial weights."""

    name = "shallow"
    summary = "control: last hidden block and output by BP, earlier blocks frozen at init"

    def __init__(self, model, example_input):
        super().__init__(model, example_input)
        self.cut_points(keep_last=True)
