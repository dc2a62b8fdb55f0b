from oodseg.cli import app

app(prog_name="oodseg")
