import ast


def parse_number(expression: str) -> float:
    return float(ast.literal_eval(expression))
