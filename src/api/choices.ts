/**
 * Resources chosen at launch (docs/choices.md): what `GET
 * /tfenv/environments` says an entry offers, and `POST /tfenv/choices`.
 */

/**
 * A value of a choice: a GPU or CPU count, or a size ("16g").
 */
export type ChoiceValue = string | number;

/**
 * An environment's `choices`: the values offered per resource (`gpus`,
 * `memory`, `cpus`, `shm_size`) and the default of each.
 */
export interface IChoices {
  options: { [key: string]: ChoiceValue[] };
  default: { [key: string]: ChoiceValue };
}

/**
 * The body of `POST /tfenv/choices`.
 */
export interface IChoiceRequest {
  /**
   * The notebook's path (`…/name.ipynb`), or a console session's path.
   */
  path: string;
  /**
   * A console session's name ("Console 1"); absent for a notebook.
   */
  name?: string;
  environment: string;
  choices: { [key: string]: ChoiceValue };
}

/**
 * Its answer: the choice completed with the defaults.
 */
export type IChoiceReply = IChoiceRequest;
