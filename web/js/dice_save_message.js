// DICE Save Refiner reports where it saved the file as ui text. The stock frontend draws only images on a
// node, so this shows the message on the node itself, in a widget that is not saved with the workflow.
import { app } from "../../../scripts/app.js";

const MESSAGE_WIDGET = "saved";

app.registerExtension({
  name: "comfyui-dice.save-message",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "DiceSaveRefiner") return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      const message = (output?.text || []).join("\n");
      let widget = this.widgets?.find((w) => w.name === MESSAGE_WIDGET);
      if (!widget) {
        widget = this.addWidget("text", MESSAGE_WIDGET, "", () => {}, { serialize: false });
        widget.serialize = false; // the workflow's widgets_values stay as they were
      }
      widget.value = message;
      // Wide enough to read the whole path (canvas text widgets cut what does not fit).
      const needed = 60 + 6.5 * message.length;
      if (this.size[0] < needed) this.setSize?.([needed, this.computeSize()[1]]);
      this.setDirtyCanvas?.(true, true);
    };
  },
});
